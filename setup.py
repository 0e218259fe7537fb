"""mmtransnext: TransNeXt backbones for MMDetection, MMSegmentation and MMPretrain."""
import glob
import os
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


def make_extensions():
    """The attention op ``mmtransnext._ext``, in mmcv's layout: C++ CPU kernels always, CUDA kernels
    when a GPU is visible or FORCE_CUDA=1. MMTRANSNEXT_WITH_OPS=0 skips it (the backbone then uses
    its pure-PyTorch attention)."""
    if os.getenv('MMTRANSNEXT_WITH_OPS', '1') == '0':
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print('mmtransnext: torch is not importable at build time, so the attention op is not built; '
              'install torch first and build with `pip install --no-build-isolation -e .`')
        return [], {}
    csrc = osp.join('mmtransnext', 'ops', 'csrc')
    dispatchers = sorted(glob.glob(osp.join(csrc, 'pytorch', '*.cpp')))  # and the Python bindings
    sources = dispatchers + sorted(glob.glob(osp.join(csrc, 'pytorch', 'cpu', '*.cpp')))
    # -fopenmp: at::parallel_for is a header template over '#pragma omp parallel', so without the flag the
    # CPU kernels run on one thread; with it they use torch's OpenMP threads (its libgomp, already loaded).
    # -fno-trapping-math: lets GCC vectorise loops with selects (the softmax's exp); IEEE results are
    # unchanged, only floating-point trap side effects (which nothing here enables) are not kept.
    # -g0: no debug information, which Python's own CFLAGS (-g) would add: 34 of the library's 35 MB and a
    # fifth of its compile time (remove the flag for a debug build).
    flags = {'cxx': ['-O3', '-fopenmp', '-fno-trapping-math', '-g0']}
    with_cuda = os.getenv('FORCE_CUDA', '0') == '1' or (torch.cuda.is_available() and CUDA_HOME is not None)
    if with_cuda:
        if os.getenv('MMTRANSNEXT_CUDA_PARTS_ONLY') == '1':
            # tests/test_ops.py::test_cuda_sources_compile, after the CPU build: only what WITH_CUDA changes, the
            # .cu kernels and the dispatchers that have CUDA parts. The rest compiles to the same code either way
            # (their headers' CUDA declarations aside), and that build has compiled it. The result is not a usable
            # op (a shared library may leave the skipped dispatchers' symbols undefined).
            sources = [path for path in dispatchers if 'WITH_CUDA' in open(path).read()]
        sources += sorted(glob.glob(osp.join(csrc, 'pytorch', 'cuda', '*.cu')))
        flags['nvcc'] = ['-O3', '--expt-relaxed-constexpr']
        if os.getenv('MMTRANSNEXT_CUDA_PARTS_ONLY') == '1':
            # PTX for sm_90 only (torch adds no arch flags of its own then): nvcc's front end and NVVM find what a
            # broken kernel breaks, and the test skips ptxas's machine code, most of the compile's time
            flags['nvcc'].append('-gencode=arch=compute_90,code=compute_90')
            # and nothing optimised: the host code (-O0, g++'s and nvcc's host pass) nor the device code (-G: NVVM
            # lowers the kernels to PTX without its optimisation passes). This build is never run, and what a broken
            # kernel breaks, the front ends and the lowering find at any level; optimised PTX took 36 s instead of
            # 21 s for pooled_attention_cuda.cu on 2 cores.
            flags['nvcc'][0] = '-O0'
            flags['nvcc'].append('-G')
            flags['cxx'][0] = '-O0'
        extension = CUDAExtension('mmtransnext._ext',
                                  sources,
                                  define_macros=[('WITH_CUDA', None)],
                                  extra_compile_args=flags)
    else:
        extension = CppExtension('mmtransnext._ext', sources, extra_compile_args=flags)
    return [extension], {'build_ext': BuildExtension}


ext_modules, cmdclass = make_extensions()
extras = {task: read_requirements(task) for task in ('det', 'seg', 'cls', 'deploy', 'tests')}
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
    # `mim search mmtransnext` reads mmtransnext/.mim/model-index.yml and the configs it names (symlinks into the
    # repo's root, copied into an installed package)
    package_data={'mmtransnext': ['.mim/model-index.yml', '.mim/configs/**/*.py', '.mim/configs/**/*.yml']},
    install_requires=read_requirements('runtime'),
    extras_require=extras,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
