"""mmtransnext: TransNeXt backbones for MMDetection, MMSegmentation and MMPretrain."""
import os.path as osp

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def read_version():
    namespace = {}
    with open(osp.join(ROOT, 'mmtransnext', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_requirements(name):
    """Requirement lines of requirements/<name>.txt, comments dropped."""
    with open(osp.join(ROOT, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


extras = {task: read_requirements(task) for task in ('det', 'seg', 'cls', 'tests')}
extras['all'] = sorted({req for task in ('det', 'seg', 'cls') for req in extras[task]})

setup(
    name='mmtransnext',
    version=read_version(),
    description='TransNeXt backbones for MMDetection, MMSegmentation and MMPretrain',
    long_description=open(osp.join(ROOT, 'README.md')).read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.8',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'docker')),
    include_package_data=True,
    install_requires=read_requirements('runtime'),
    extras_require=extras,
    zip_safe=False,
)
