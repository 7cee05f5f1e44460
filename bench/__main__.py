"""`python -m bench [--quick | --tiny]`: run the benchmark of DTS and SDVG on the toy world's tiny models."""
import argparse

from .run import RESULTS_DIR, Settings, run


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer seeds and a smaller sweep (< 5 min on 2 cores)")
    size.add_argument("--tiny", action="store_true", help="one seed, one point per sweep (the test's setting)")
    parser.add_argument("--dts-seeds", type=int, help="override the number of DTS seeds")
    parser.add_argument("--sdvg-seeds", type=int, help="override the number of SDVG seeds")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the models are tiny, and one thread is the fastest "
                        "on a shared machine)")
    parser.add_argument("--out-dir", default=RESULTS_DIR, help="where tables, JSON, plot and strips go")
    parser.add_argument("--no-pictures", action="store_true", help="skip the PNG plot, strip and GIF")
    args = parser.parse_args(argv)
    settings = Settings.tiny() if args.tiny else Settings.quick() if args.quick else Settings()
    settings.threads = args.threads
    if args.dts_seeds is not None:
        settings.dts_seeds = args.dts_seeds
    if args.sdvg_seeds is not None:
        settings.sdvg_seeds = args.sdvg_seeds
    run(settings, out_dir=args.out_dir, pictures=not args.no_pictures)


if __name__ == "__main__":
    main()
