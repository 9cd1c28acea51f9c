from nodefeatures.cli import main

main()
