"""flowjax: flow matching in JAX, as pure composable functions.

Time convention (everywhere): ``t = 0`` is the source (noise), ``t = 1`` is the data; the average
velocity over ``[s, t]`` is ``u(x, s, t)`` with ``X_{s,t}(x) = x + (t - s) u(x, s, t)``.
"""

__version__ = "0.1.0"
