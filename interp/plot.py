"""``interp.plot`` is :mod:`interp.ilo.plot` (ILO's figures live with ILO; this path keeps old imports working)."""

from interp.ilo.plot import plot_cooccurrence, plot_ilo_heatmap, plot_ilo_layers

__all__ = ["plot_ilo_layers", "plot_ilo_heatmap", "plot_cooccurrence"]
