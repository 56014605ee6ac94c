from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "lumin_inferno" / "version.py").read_text(), version)

setup(
    name="lumin-inferno",
    version=version["__version__"],
    description="INFERNO, approximate INFERNO and learning-to-pivot as LUMIN callbacks",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["lumin_inferno", "lumin_inferno.*"]),
    package_data={"lumin_inferno": ["py.typed"]},  # PEP 561: the package ships its type hints
    install_requires=[
        "torch==2.13.0",
        "lumin==0.9.1",
        "numpy<2",
        "pandas<2.1",
        "setuptools<81",
        "scikit-learn<1.9",
        "h5py>=3.10",
        "scipy>=1.11",
        "iminuit>=2.25",
        "matplotlib>=3.8",
        "mplhep>=0.3",
        "fastprogress==0.1.21",
        "dask[distributed]>=2024.1",
    ],
    extras_require={
        "export": ["onnx>=1.16", "onnxruntime>=1.17", "onnxscript>=0.2", "pyhf>=0.7.6", "cabinetry>=0.6",
                   "uproot>=5.3"],
    },
    entry_points={"console_scripts": ["lumin-inferno=lumin_inferno.cli:main"]},
)
