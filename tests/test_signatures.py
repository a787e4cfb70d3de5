"""ftlab.signatures: a rule function's signature is read once and Snakemake then reads exactly
what inspect.signature gives (snakemake.common.get_function_params)."""

import inspect

from snakemake.common import get_function_params, get_input_function_aux_params
from snakemake.io import unpack
from snakemake.resources import Resource

from ftlab.signatures import remember_signatures


def by_model(wildcards):
    return f"m/{wildcards.model}"


def with_input(wildcards, input, attempt):
    return attempt


def open_ended(wildcards, **kwargs):
    return kwargs


class _Rule:
    """What remember_signatures reads of a Snakemake rule."""

    def __init__(self, input=(), params=(), resources=None):
        self.input, self.params, self.resources = list(input), list(params), resources


def test_functions_of_every_place_get_their_own_signature():
    resources = {"mem_mb": Resource("mem_mb", open_ended), "runtime": Resource("runtime", 5)}
    rules = [
        _Rule(
            input=["data/x.txt", by_model],
            params=[unpack(with_input), 3, "text"],
            resources=resources,
        ),
        _Rule(input=[by_model]),  # the same function in two rules: set once
        _Rule(),
    ]
    assert remember_signatures(rules) == 3
    for func in (by_model, with_input, open_ended):
        assert dict(get_function_params(func)) == dict(inspect.signature(func).parameters)
    # Snakemake's choice of extra arguments is the same as without the attribute
    offered = {"input": 1, "attempt": 2, "threads": 3}
    assert get_input_function_aux_params(with_input, offered) == {"input": 1, "attempt": 2}
    assert get_input_function_aux_params(open_ended, offered) == offered
    assert remember_signatures(rules) == 0  # already set
    # Snakemake's Resource.evaluate, called bound for every resource of every job
    bound = Resource("mem_mb", open_ended).evaluate
    assert dict(get_function_params(bound)) == dict(inspect.signature(bound).parameters)
    assert get_input_function_aux_params(bound, offered) == offered
