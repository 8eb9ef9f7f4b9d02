"""Fitting the compute-optimal ``auto`` controller: the fitter that makes a policy file from eval runs (``fit``) and
its evaluation on replayed runs (``evaluate``). What runs at solve time (the controller, its policy file and the
difficulty features) lives beside it in ``thinkscale.strategies`` (``auto``, ``auto_policy``, ``auto_features``);
nothing there imports this package."""
