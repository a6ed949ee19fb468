"""The web client: built from web/ by `make web` into static/, served by `dmds serve`'s web port."""
