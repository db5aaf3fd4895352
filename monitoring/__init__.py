"""EmotiTrack monitoring: Evidently drift reports of live traffic against the training reference."""
