from .transnext import TransNeXt

__all__ = ['TransNeXt']
