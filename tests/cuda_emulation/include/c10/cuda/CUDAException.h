// The emulation's stand-in: a bad launch configuration throws at the launch itself (cuda_emulation.h).
#pragma once
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)
