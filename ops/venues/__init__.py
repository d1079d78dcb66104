"""Venues behind one async interface: paper and ccxt."""
