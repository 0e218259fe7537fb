from .checkpoint_hook import AtomicCheckpointHook
from .optim_constructor import TransNeXtOptimWrapperConstructor

__all__ = ['AtomicCheckpointHook', 'TransNeXtOptimWrapperConstructor']
