"""Backends: what exists only to make one kind of machine fast, out of the primitives' own code. Each primitive keeps
one visible line that dispatches to its backend's path; reading a primitive, the GPU's code (or the plain torch and
Warp one) is all there is to follow. :mod:`headfields.backends.cpu`: a small CPU's."""
