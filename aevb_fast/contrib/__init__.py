"""Adapters to other libraries; each module is imported only when its library is installed."""
