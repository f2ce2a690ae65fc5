"""The execution core: run context, units, the draw step, the unit scheduler and the drivers
that run strategies and allocators on it."""
