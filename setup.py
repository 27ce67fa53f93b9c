"""The one compiled module: the Concelier export's hot path (see osv_fast.py and _osvc.c).

Everything else is in pyproject.toml; setuptools only takes extension modules from here.
"""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "stella_mirror.concelier.sources._osvc",
            ["src/stella_mirror/concelier/sources/_osvc.c"],
            depends=sorted(glob("src/stella_mirror/concelier/sources/osvc/*.h")),  # its parts: rebuild on change
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
