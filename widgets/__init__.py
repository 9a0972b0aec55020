"""Jupyter views of PQ Explorer: ipywidgets + plotly, driven by :mod:`explorer.events`."""
