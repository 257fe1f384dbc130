"""Pull a Label Studio project as a YOLO dataset (placeholder until the pull lands)."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    raise NotImplementedError
