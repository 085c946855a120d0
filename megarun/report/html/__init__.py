"""The static HTML report: pages built from the database, written as a site that opens from
file:// or any static web server, with nothing fetched from the network.

page.py renders templates (autoescaped) into Page objects; urls.py names every page's path;
site.py writes a set of pages into a folder incrementally; build.py runs the page producers.
"""
