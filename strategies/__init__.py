"""Pure policies: target weights and trigger rules. No I/O, no await, no clock reads."""
