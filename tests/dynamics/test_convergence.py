"""Convergence checks: messages per offending parameter, one warning per run, limits."""

import warnings

import numpy as np
import pytest

from dynamics.convergence import ConvergenceWarning, convergence_problems, warn_if_not_converged


def test_converged_run_has_no_problems_and_no_warning():
    r_hat = {"log10_m_ref": 1.002, "v_sys": np.float32(0.999)}
    ess = {"log10_m_ref": 812.0, "v_sys": 1000.0}
    assert convergence_problems(r_hat, ess) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_not_converged(r_hat, ess) == []


def test_one_message_per_offending_parameter():
    r_hat = {"log10_m_ref": 1.57, "f_fg": 1.004, "v_sys": 20.1}
    ess = {"log10_m_ref": 300.0, "f_fg": 12.7, "v_sys": 1.0}
    assert convergence_problems(r_hat, ess) == [
        "log10_m_ref: R-hat 1.57 > 1.01",
        "v_sys: R-hat 20.10 > 1.01, ESS 1 < 100",
        "f_fg: ESS 12 < 100",
    ]


def test_values_at_the_limits_pass_and_printed_values_exceed_them():
    assert convergence_problems({"a": 1.01}, {"a": 100.0}) == []
    # printed with enough digits that the message never reads "1.01 > 1.01" or "100 < 100"
    assert convergence_problems({"a": 1.0101}, {"a": 99.99}) == ["a: R-hat 1.0101 > 1.01, ESS 99 < 100"]


def test_custom_limits():
    r_hat, ess = {"a": 1.03}, {"a": 250.0}
    assert convergence_problems(r_hat, ess, r_hat_max=1.05, ess_min=200) == []
    assert convergence_problems(r_hat, ess, r_hat_max=1.05, ess_min=400) == ["a: ESS 250 < 400"]


def test_arrays_use_the_worst_element():
    r_hat = {"beta": np.array([1.001, 1.2, 1.003]), "v": np.array(1.0)}
    ess = {"beta": np.array([[900.0, 40.0], [800.0, 700.0]]), "v": [500.0]}
    assert convergence_problems(r_hat, ess) == ["beta: R-hat 1.20 > 1.01, ESS 40 < 100"]


def test_non_finite_diagnostics_fail():
    # a chain that never moves gives NaN R-hat in numpyro's summary
    problems = convergence_problems({"a": np.nan, "b": 1.0}, {"a": 1000.0, "b": np.array([np.inf])})
    assert problems == ["a: R-hat is not finite", "b: ESS is not finite"]


def test_warning_is_one_line_naming_every_offender():
    r_hat = {"log10_m_ref": 1.57, "f_fg": 1.0}
    ess = {"log10_m_ref": 500.0, "f_fg": 12.0}
    with pytest.warns(ConvergenceWarning) as caught:
        problems = warn_if_not_converged(r_hat, ess)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message == ("NUTS did not converge: R-hat 1.57 > 1.01 for log10_m_ref; ESS 12 < 100 for f_fg; "
                       "results are unreliable")
    assert "\n" not in message
    assert problems == convergence_problems(r_hat, ess)
    assert issubclass(ConvergenceWarning, UserWarning)


def test_warning_names_the_sampler_and_honours_limits():
    with pytest.warns(ConvergenceWarning, match=r"^joint NUTS did not converge: ESS 150 < 400 for a;"):
        assert warn_if_not_converged({"a": 1.0}, {"a": 150.0}, what="joint NUTS", ess_min=400) == [
            "a: ESS 150 < 400"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_not_converged({"a": 1.03}, {"a": 150.0}, r_hat_max=1.05) == []


def test_bad_input():
    with pytest.raises(ValueError, match="r_hat_max"):
        convergence_problems({}, {}, r_hat_max=0.9)
    with pytest.raises(ValueError, match="ess_min"):
        convergence_problems({}, {}, ess_min=-1)
    with pytest.raises(ValueError, match="r_hat must be a mapping"):
        convergence_problems([1.0], {})
    with pytest.raises(TypeError):
        warn_if_not_converged({}, {}, rhat_max=1.1)
