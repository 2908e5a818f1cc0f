"""uadnet: self-configuring unsupervised anomaly detection for medical images."""
from setuptools import find_packages, setup

setup(
    name="uadnet",
    version="0.1.0",
    description="Self-configuring unsupervised anomaly detection (cold-diffusion restoration) for medical images",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["uadnet", "uadnet.*"]),
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.12",
        "scikit-image>=0.21",
        "scikit-learn>=1.3",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "pandas>=2.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": ["pytest>=7", "ruff>=0.4", "nilearn>=0.10", "onnxruntime>=1.17", "openvino>=2024.0", "onnx>=1.15"],
        "demo": ["nilearn>=0.10"],
        "deploy": ["onnxruntime>=1.17", "openvino>=2024.0", "onnx>=1.15"],
    },
    entry_points={
        "console_scripts": [
            "uadnet_plan_and_preprocess=uadnet.cli.plan_and_preprocess:main",
            "uadnet_make_demo_dataset=uadnet.cli.make_demo_dataset:main",
            "uadnet_plot_corruptions=uadnet.cli.plot_corruptions:main",
            "uadnet_train=uadnet.cli.train:main",
            "uadnet_demo=uadnet.cli.demo:main",
            "uadnet_predict=uadnet.cli.predict:main",
            "uadnet_export_model_to_zip=uadnet.cli.export_model_to_zip:main",
            "uadnet_install_pretrained_model_from_zip=uadnet.cli.install_pretrained_model_from_zip:main",
            "uadnet_baseline=uadnet.cli.baseline:main",
            "uadnet_ensemble=uadnet.cli.ensemble:main",
            "uadnet_find_best_configuration=uadnet.cli.find_best_configuration:main",
            "uadnet_evaluate=uadnet.cli.evaluate:main",
            "uadnet_plot_overlays=uadnet.cli.plot_overlays:main",
        ]
    },
)
