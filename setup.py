"""The one compiled module: the OSV fast path of the Concelier export (see osv_fast.py and _osvc.c).

Everything else is in pyproject.toml; setuptools only takes extension modules from here.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "stella_mirror.concelier.sources._osvc",
            ["src/stella_mirror/concelier/sources/_osvc.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
