// The emulation's stand-in for CUDA's runtime header, which the kernel headers include.
#pragma once
#include "../cuda_emulation.h"
