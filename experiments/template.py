"""Template of an experiment (copy it to start a new one): flags -> data -> sweep -> analysis ->
work directory. It trains a small depth grid and reports the fitted compression ratio per depth.

    python -m experiments.template [--depths 3,4 --seeds 2 --workdir runs/template]

Writes config.json (re-run it with --config), metrics.jsonl, results.json, summary.md.
"""

import dataclasses

from pnc_jax import analysis, cli, summaries
from pnc_jax.config import Config, setting
from pnc_jax.data import dataset_for


@dataclasses.dataclass(frozen=True)
class Settings:
    """The shared training settings plus this experiment's own fields (each one a flag)."""

    train: Config = Config(depths=(3, 4), seeds=(0, 1), epochs=200)
    start: int = setting(1, "first layer of the geometric fit")

    def validate(self) -> None:  # experiment-specific checks; Config checks itself
        if not 0 <= self.start < min(self.train.depths) - 1:
            raise ValueError(f"start={self.start} leaves fewer than 2 layers to fit")


def default() -> Settings:
    """Depths 3, 4 x 2 seeds of the Figure-4 setting, 200 epochs: a few seconds on a CPU.

    Expected: every run converges; fitted ratios ~0.86 (L=3) and ~0.48 (L=4).
    """
    return Settings()


def run(s: Settings, ctx: cli.RunContext) -> list:
    data = dataset_for(s.train)  # bad data -> exit 2, the work directory untouched
    ctx.begin(data=data)  # config.json written; from here on the run owns the directory
    records, _ = ctx.sweep(s.train, data.x_train, data.y_train)
    results = [{"depth": r["depth"], "seed": r["seed"], "status": r["status"],
                "compression": r["compression"],
                "fit": analysis.fit(r["compression"], "geometric", s.start)} for r in records]
    ctx.workdir.write_json("results.json", results)
    rows = [[r["depth"], r["seed"], summaries.num(r["fit"] and r["fit"]["ratio"])]
            for r in results]
    ctx.workdir.write_text("summary.md", "\n".join(summaries.table(["L", "seed", "ratio"],
                                                                   rows)) + "\n")
    return results


EXPERIMENT = cli.Experiment("template", __doc__, {"default": default}, run)


def main(argv=None) -> list:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    main()
