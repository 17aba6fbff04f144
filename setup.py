"""Ships the repository's conf/ and sweeps/ inside the package, as bnnx/conf and bnnx/sweep_files,
so an installed bnnx (not only a checkout) finds its configs and paper tables. The folders stay
at the top level of the repository, where users edit and run them (`bnnx sweep sweeps/...`).
Each of their subfolders (conf/method, ...) is listed as a data package of its own, so setuptools
neither skips nor warns about it. The embedded digits (bnnx/data/digits.npz) and the C export's runtime
(bnnx/deploy/c_runtime) ship as package data."""

import os

from setuptools import find_packages, setup

DATA_ROOTS = {"bnnx.conf": "conf", "bnnx.sweep_files": "sweeps"}


def data_packages() -> dict[str, str]:
    out = {}
    for package, root in DATA_ROOTS.items():
        for folder, subfolders, _ in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith((".", "__")))
            relative = os.path.relpath(folder, root)
            out[package if relative == "." else f"{package}.{relative.replace(os.sep, '.')}"] = folder
    return out


DATA_PACKAGES = data_packages()

setup(packages=find_packages(include=["bnnx", "bnnx.*"]) + list(DATA_PACKAGES),
      package_dir=DATA_PACKAGES,
      package_data={"bnnx.data": ["*.npz"], "bnnx.deploy": ["c_runtime/*"], **{name: ["*.yaml"] for name in DATA_PACKAGES}})
