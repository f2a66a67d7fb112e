"""Traces of the download flow: one record per request that passed through modgate,
grouped into sessions, kept in SQLite and shown as tables, pictures and exports.

    record     Record: what one request was, how it went and what modgate decided
    sessions   Sessionizer: which `go` invocation a request belongs to (client + idle gap)
    store      TraceDB: the SQLite schema, inserts, queries, labels and retention;
               default_db: where `modgate run` keeps it
    writer     TraceWriter: a thread that owns the database; the proxy only enqueues
    report     `trace ls` / `trace show` as text and JSON
    escape     outside text made safe for each sink: terminal, Mermaid, SVG and HTML
    waterfall  the timeline picture (SVG, PNG, HTML)
    sequence   a Mermaid sequence diagram
    sbom       a CycloneDX SBOM of the module versions a session downloaded
    flows      records as mitmproxy flows: HAR and mitmproxy flow files

Only `flows` imports mitmproxy; the addon that records is `modgate.addons.trace`.
"""
