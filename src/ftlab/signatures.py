"""Planning speed: each rule function's signature read once, not once per job.

Snakemake asks `inspect.signature` which arguments an input, params or resources function
takes every time it calls one (snakemake.common.get_function_params): about 20 times per job,
~8% of a large dry run under cProfile. It first looks for the attribute `_overwrite_params`
(its own hook, set by snakemake.common.overwrite_function_params for generated functions) and
takes the parameters from there; `remember_signatures` sets that attribute once per function,
to exactly what inspect.signature returns, so nothing Snakemake decides changes. The same
goes for Snakemake's own `Resource.evaluate`, which it calls that way for every resource of
every job (about 8 per job): a bound method reads the attribute from its function, so it is set
there, to the bound method's parameters (`*args, **kwargs`).
"""

from __future__ import annotations

import inspect

ATTR = "_overwrite_params"  # snakemake.common.FUNC_OVERWRITE_PARAMS_ATTR


def _function(item):
    """The function Snakemake calls for an input/params item or a resource, or None."""
    item = getattr(item, "_file", item)  # an IOFile made from a function (flags, unpack)
    func = getattr(item, "callable", None)  # an AnnotatedString holding a function
    if func is None and callable(item) and not isinstance(item, type):
        func = item
    return func if callable(func) else None


def remember_signatures(rules) -> int:
    """Set `_overwrite_params` on the input, params and resources functions of `rules`;
    returns how many functions got it."""
    from snakemake.resources import Resource

    done = 0
    if not hasattr(Resource.evaluate, ATTR):
        bound = inspect.signature(Resource("probe", 1).evaluate).parameters
        setattr(Resource.evaluate, ATTR, bound)
    for rule in rules:
        items = [*rule.input, *rule.params]
        if rule.resources is not None:
            items += [getattr(v, "_evaluator", None) for v in rule.resources.values()]
        for func in filter(None, map(_function, items)):
            if hasattr(func, ATTR):
                continue
            try:
                params = inspect.signature(func).parameters
                setattr(func, ATTR, params)
            except (TypeError, ValueError, AttributeError):  # builtins, bound methods
                continue
            done += 1
    return done
