"""`python -m bench [--quick | --tiny]`: run the benchmark of DTS and SDVG on the toy world's tiny models."""
import argparse

from .run import RESULTS_DIR, SEED_RANGES, Settings, run


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the main job: 32 seeds per table, a smaller sweep "
                      "(< 10 min on 2 cores)")
    size.add_argument("--tiny", action="store_true", help="one seed, one point per sweep (the test's setting)")
    parser.add_argument("--seeds", choices=sorted(SEED_RANGES), default="report",
                        help="seed range (bench/world.py): 'report' for the tables, 'choice' to choose taus, "
                        "thresholds or checkpoints on seeds the reported tables never see")
    parser.add_argument("--dts-seeds", type=int, help="override the number of DTS seeds (each world's)")
    parser.add_argument("--sdvg-seeds", type=int, help="override the number of SDVG seeds")
    parser.add_argument("--taus", help="override SDVG's tau sweep, e.g. 0.7,0.8,0.9")
    parser.add_argument("--part", choices=("all", "dts", "sdvg"), default="all", help="run only one part")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per worker (default 1: the models are tiny, and one thread is the "
                        "fastest on a shared machine)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes sharing the seeds (default 2)")
    parser.add_argument("--out-dir", default=RESULTS_DIR, help="where tables, JSON, plot and strips go (default "
                        "bench/results/, git-ignored)")
    parser.add_argument("--no-pictures", action="store_true", help="skip the PNG plot, strip and GIF")
    args = parser.parse_args(argv)
    settings = Settings.tiny() if args.tiny else Settings.quick() if args.quick else Settings()
    settings.threads = args.threads
    settings.workers = args.workers
    settings.seeds = args.seeds
    settings.dts = args.part in ("all", "dts")
    settings.sdvg = args.part in ("all", "sdvg")
    if args.dts_seeds is not None:
        settings.dts_seeds = settings.beacon_dts_seeds = settings.default_dts_seeds = args.dts_seeds
    if args.sdvg_seeds is not None:
        settings.sdvg_seeds = args.sdvg_seeds
    if args.taus is not None:
        settings.taus = tuple(float(t) for t in args.taus.split(","))
    run(settings, out_dir=args.out_dir, pictures=not args.no_pictures)


if __name__ == "__main__":
    main()
