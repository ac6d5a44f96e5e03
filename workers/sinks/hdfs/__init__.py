"""Flume's HDFS sink (``hdfs``): the sink in :mod:`.sink`, its properties in :mod:`.config`, file formats in
:mod:`.formats`, WebHDFS and local file systems in :mod:`.webhdfs` and :mod:`.filesystems`, bucket writers in
:mod:`.writer`, and the write journal that prevents duplicates and stuck in-use files in :mod:`.journal`."""
