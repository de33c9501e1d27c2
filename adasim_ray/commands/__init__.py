"""The work of each sub-command of ``adasim-ray``: a function of the parsed arguments that
returns the exit code, named by the parser in ``adasim_ray/cli.py`` (``module:function``) and
imported only when its command runs. ``args.py`` holds the options several commands share.
"""
