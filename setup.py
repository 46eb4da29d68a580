from setuptools import find_packages, setup


def get_requirements(path: str):
    return [line.strip() for line in open(path) if line.strip() and not line.startswith("#")]


setup(
    name="llama",
    version="0.1.0",
    description="Llama 2 inference on CPU and GPU, any number of processes, call-compatible with Meta's reference code",
    packages=find_packages(include=["llama", "llama.*"]),
    package_data={"llama": ["tiny_corpus.txt"]},
    python_requires=">=3.10",
    install_requires=get_requirements("requirements.txt"),
    extras_require={"test": ["pytest", "transformers"]},
)
