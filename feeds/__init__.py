"""Turning the outside world into ticks: files, synthetic markets, cryptofeed, the exchange simulator."""
