from .optim_constructor import TransNeXtOptimWrapperConstructor

__all__ = ['TransNeXtOptimWrapperConstructor']
