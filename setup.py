from setuptools import find_packages, setup

setup(
    name="ckptkit",
    version="0.1.0",
    description="Read, check, edit and fine-tune from TensorFlow checkpoints, without starting TF",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ckptkit", "ckptkit.*"]),
    # the registry's source is pretrain/registry.json; ckptkit/zoo/registry.json links to it
    package_data={"ckptkit.zoo": ["registry.json"]},
    python_requires=">=3.9",
    install_requires=[
        "click>=8.1",
        "numpy>=1.23",
        "h5py>=3.8",
        "google-crc32c>=1.5",
        "ml_dtypes>=0.3",
        "rich>=13",
        "platformdirs>=3",
    ],
    extras_require={
        "tf": ["tensorflow-cpu>=2.16", "tf-keras>=2.16", "tf-slim>=1.1", "matplotlib>=3.6"],
        "gpu": ["tensorflow[and-cuda]>=2.16", "tf-keras>=2.16", "tf-slim>=1.1",
                "matplotlib>=3.6"],
        "demo": ["mlxtend>=0.22"],
        "search": ["optuna>=3.6"],
        "port": ["keras>=3.0"],
        "onnx": ["tf2onnx>=1.16", "onnx>=1.14", "onnxruntime>=1.16", "Pillow>=9"],
        "dev": ["pytest>=7", "hypothesis>=6", "safetensors>=0.4", "scikit-learn>=1.2",
                "mlxtend>=0.22", "optuna>=3.6", "pgserver>=0.1", "psycopg[binary]>=3.1",
                # Keras 3's other backends, for the port tests; torchvision and timm hold
                # the classes `port --to torch` writes for (torchvision needs this torch)
                "jax>=0.4", "torch==2.14.1", "torchvision==0.29.1", "timm>=1.0"],
    },
    entry_points={"console_scripts": ["ckptkit=ckptkit.cli:main"]},
)
