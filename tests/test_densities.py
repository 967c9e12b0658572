import torch

from motg_lightning.rules.densities import dirichlet_log_density, log_gamma_sample


def test_dirichlet_log_density_over_the_kept_slots_is_torchs_dirichlet_of_those_slots():
    weights, concentration = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.7, 1.5, 2.0])
    every = torch.ones(3, dtype=torch.bool)
    expected = torch.distributions.Dirichlet(concentration).log_prob(weights)
    torch.testing.assert_close(dirichlet_log_density(weights, concentration, every), expected)
    kept = torch.tensor([True, True, False])
    two = torch.tensor([2 / 7, 5 / 7, 0.0])
    expected = torch.distributions.Dirichlet(concentration[:2]).log_prob(two[:2])
    torch.testing.assert_close(dirichlet_log_density(two, concentration, kept), expected)


def test_log_gamma_sample_has_the_gamma_mean_and_stays_finite_for_tiny_concentrations():
    torch.manual_seed(0)
    draws = log_gamma_sample(torch.full((200_000,), 2.5)).exp()
    torch.testing.assert_close(draws.mean(), torch.tensor(2.5), atol=0.02, rtol=0)
    assert torch.isfinite(log_gamma_sample(torch.full((1000,), 1e-3))).all()
