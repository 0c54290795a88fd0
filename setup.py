"""sdm: Sequential Deep Matching (Lv et al., CIKM 2019) on TensorFlow."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "tensorboard==2.21.0",
    "tensorflow-recommenders==0.7.7",
    "apache-beam[tfrecord]==2.77.0",
    "absl-py>=2.1",
    "numpy>=1.26",
    "google-crc32c>=1.5",
    "pyarrow>=14",
    "fastapi>=0.110",
    "uvicorn>=0.29",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "httpx2>=2.0",  # Starlette's TestClient uses it; plain httpx is deprecated there
        "black>=24",
        "ruff>=0.5",
        "pyyaml>=6",
        "kubeflow-training==1.9.4",
        "matplotlib>=3.8",
    ],
    # launch.explain's figures.
    "figures": ["matplotlib>=3.8"],
    # FAISS for the item index: exactly one of these two. Both wheels write the same `faiss`
    # package, so installed together the last one wins file by file, and uninstalling one
    # deletes the other's files (docs/performance.md, "FAISS on a GPU").
    "cpu": ["faiss-cpu==1.15.1"],
    "gpu": ["faiss-gpu==1.15.1"],
}

setup(
    name="sdm",
    version="0.1.0",
    description="Sequential Deep Matching (SDM) for candidate retrieval, on TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["sdm_tf", "sdm_tf.*", "pipelines", "pipelines.*", "launch", "launch.*"]
    ),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "sdm-generate=launch.generate:entry",
            "sdm-preprocess=launch.preprocess:entry",
            "sdm-train=launch.train:entry",
            "sdm-evaluate=launch.evaluate:entry",
            "sdm-bench-split=launch.bench_split:entry",
        ]
    },
)
