from beam_i3d.cli import console_main

console_main()
