"""The applications over the library: runs (train, load, resume), the commands, the viewer, export, reenactment,
the media and splat files."""
