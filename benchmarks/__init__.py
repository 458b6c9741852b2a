"""Developer tools that measure pokedemo (training, prediction and load benchmarks); not part of the app."""
