"""keel's deterministic core: ticks, clock, price book, portfolio, trigger, planner, execution."""
