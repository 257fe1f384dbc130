"""Simulated CriTer server (placeholder until the simulator lands)."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    raise NotImplementedError
