"""A plain PyTorch training loop, switched to an mldd optimizer by changing two lines.

The loop below is what a torch user already has: a model, a loss, a closure that calls
``backward()``, and ``optimizer.step(closure)``. The two marked lines are all that changes:

    - optimizer = torch.optim.LBFGS(model.parameters(), history_size=10,
    -                               line_search_fn="strong_wolfe")
    + import mldd
    + optimizer = mldd.optim.TrustRegion(model.parameters())

``TrustRegion`` needs no learning rate (the radius adapts by the ratio test), never steps onto a
NaN/Inf loss, and reports why it stopped. (``mldd.optim.LBFGS(model.parameters(), memory=10)``
is the closest drop-in for torch's L-BFGS: the same iterations, one per ``step``.) Run::

    python examples/plain_pytorch_to_mldd.py            # mldd TrustRegion
    python examples/plain_pytorch_to_mldd.py --torch    # the original torch loop, for comparison
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits

import mldd  # change 1 of 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", action="store_true", help="use torch.optim.LBFGS instead")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    # scikit-learn's 8×8 digits: offline, 1,797 images.
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float64)
    y = torch.tensor(y)
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 10)).double()
    loss_fn = torch.nn.CrossEntropyLoss()

    if args.torch:
        # max_iter=1: one step() is one iteration, as for mldd's optimizers, so the loops compare
        # step for step. max_eval must then be given: torch derives max_eval = 1 from
        # max_iter = 1, which would stop its line search after one trial.
        optimizer = torch.optim.LBFGS(model.parameters(), history_size=10, max_iter=1,
                                      max_eval=25, line_search_fn="strong_wolfe")
    else:
        optimizer = mldd.optim.TrustRegion(model.parameters())  # change 2 of 2

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model(x_train), y_train)
        loss.backward()
        return loss

    t0 = time.perf_counter()
    for step in range(args.steps):
        loss = optimizer.step(closure)
        if step % 25 == 0:
            print(f"step {step:4d}  loss {loss.item():.4e}")
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).double().mean().item()
        final = loss_fn(model(x_train), y_train).item()
    name = "torch.optim.LBFGS" if args.torch else "mldd.optim.TrustRegion"
    print(f"{name}: {args.steps} steps in {time.perf_counter() - t0:.1f} s, "
          f"final loss {final:.3e}, test accuracy {acc:.3f}")
    if not args.torch:
        info = optimizer.last_info
        print(f"radius {info['radius']:.3g}, last step accepted: {info['accepted']}, "
              f"gradient evaluations {info['n_g']}")


if __name__ == "__main__":
    main()
