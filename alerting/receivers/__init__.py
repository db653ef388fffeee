"""Receivers: where notifications go. Each one is a ``Receiver`` (see ``base.py``)."""
