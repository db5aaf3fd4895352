"""EmotiTrack: the ``emotitrack`` command and the end-to-end demo across the parts."""
