"""Builds the optional C speedups (kv/_speedups.c); all other settings are in pyproject.toml.

optional=True: where no C compiler is present the install goes on without them
and kv uses its pure-Python paths (same results, slower; `kv inspect` says which).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("kv._speedups", ["kv/_speedups.c"], optional=True, extra_compile_args=["-O2"])])
