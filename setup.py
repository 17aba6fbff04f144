"""Ships the repository's conf/ and sweeps/ inside the package, as bnnx/conf and bnnx/sweep_files,
so an installed bnnx (not only a checkout) finds its configs and paper tables. The folders stay
at the top level of the repository, where users edit and run them (`bnnx sweep sweeps/...`)."""

from setuptools import find_packages, setup

DATA_PACKAGES = {"bnnx.conf": "conf", "bnnx.sweep_files": "sweeps"}

setup(packages=find_packages(include=["bnnx", "bnnx.*"]) + list(DATA_PACKAGES),
      package_dir=DATA_PACKAGES,
      package_data={name: ["*.yaml", "*/*.yaml"] for name in DATA_PACKAGES})
