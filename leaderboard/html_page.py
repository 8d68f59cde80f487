"""A single static HTML page (``index.html``): every table, sortable and filterable, with no server and no
network (CSS and JavaScript are inline).

The tables are rendered here, so the page reads fine without JavaScript; the script only sorts and
filters. The state lives in the URL hash, so a view can be linked to and tested headlessly:
``index.html#sort=overall.2.desc&q=pca&refs=0&table=tier1`` sorts the overall table by its third column
(descending), keeps methods whose name contains "pca", hides reference rows and shows only tier 1.
"""

from __future__ import annotations

import re
from html import escape

from leaderboard.data import Board, Cell, Row, Stat, Table, fmt, fmt_rank
from leaderboard.markdown import CAP_MARK, ERR_MARK, legend, wall_text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;max-width:80rem;
padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.15rem;margin:1.6rem 0 .2rem}
p.legend,p.note{color:#555;font-size:.88rem;max-width:60rem}
.controls{display:flex;gap:1.2rem;flex-wrap:wrap;align-items:center;padding:.6rem .8rem;background:#f3f4f6;
border-radius:6px;font-size:.9rem;position:sticky;top:0;z-index:1}
.controls input[type=search]{padding:.25rem .4rem;width:14rem}
table.lb{border-collapse:collapse;margin:.4rem 0 .2rem;font-size:.86rem;font-variant-numeric:tabular-nums}
table.lb th,table.lb td{padding:.28rem .6rem;border-bottom:1px solid #e3e3e3;text-align:right;white-space:nowrap}
table.lb th:nth-child(2),table.lb td:nth-child(2){text-align:left}
table.lb thead th{border-bottom:2px solid #333;cursor:pointer;user-select:none;background:#fff}
table.lb thead th:hover{background:#eef2ff}
table.lb th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
table.lb th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
tr.ref td{color:#666;font-style:italic}tr.ref td:nth-child(2)::after{content:" (ref)";font-size:.8em}
td .ci{color:#888;font-size:.8em}td.err{color:#b00020}.errmark{color:#b00020;font-weight:600}
tr[hidden]{display:none}.count{color:#555;font-size:.8rem}
"""

JS = r"""
(function(){
  "use strict";
  function num(td){var v=td.getAttribute("data-v");return v===null||v===""?null:parseFloat(v);}
  function sortTable(table,col,dir){
    var tbody=table.tBodies[0];var rows=Array.prototype.slice.call(tbody.rows);
    rows.forEach(function(r,i){if(!r.hasAttribute("data-i"))r.setAttribute("data-i",i);});
    var numeric=table.tHead.rows[0].cells[col].getAttribute("data-type")==="num";
    var sign=dir==="asc"?1:-1;
    rows.sort(function(a,b){
      var x=a.cells[col],y=b.cells[col],c;
      if(numeric){var p=num(x),q=num(y);
        if(p===null&&q===null)c=0;else if(p===null)return 1;else if(q===null)return -1;else c=p-q;}
      else{c=x.textContent.trim().localeCompare(y.textContent.trim());}
      return c!==0?sign*c:(+a.getAttribute("data-i"))-(+b.getAttribute("data-i"));
    });
    rows.forEach(function(r){tbody.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      if(i===col)th.setAttribute("aria-sort",dir==="asc"?"ascending":"descending");
      else th.removeAttribute("aria-sort");});
  }
  function state(){
    var s={sort:null,q:"",refs:true,errs:false,table:"all"};
    location.hash.replace(/^#/,"").split("&").forEach(function(kv){
      if(!kv)return;var i=kv.indexOf("=");var k=i<0?kv:kv.slice(0,i);var v=i<0?"":decodeURIComponent(kv.slice(i+1));
      if(k==="sort"){var p=v.split(".");if(p.length===3)s.sort={table:p[0],col:parseInt(p[1],10),dir:p[2]};}
      else if(k==="q")s.q=v;else if(k==="refs")s.refs=v!=="0";else if(k==="errs")s.errs=v==="1";
      else if(k==="table")s.table=v;});
    return s;
  }
  function writeHash(s){
    var parts=[];if(s.sort)parts.push("sort="+s.sort.table+"."+s.sort.col+"."+s.sort.dir);
    if(s.q)parts.push("q="+encodeURIComponent(s.q));if(!s.refs)parts.push("refs=0");if(s.errs)parts.push("errs=1");
    if(s.table&&s.table!=="all")parts.push("table="+s.table);
    history.replaceState(null,"",parts.length?"#"+parts.join("&"):location.pathname+location.search);
  }
  function apply(s){
    document.getElementById("q").value=s.q;document.getElementById("refs").checked=s.refs;
    document.getElementById("errs").checked=s.errs;document.getElementById("table").value=s.table;
    var q=s.q.toLowerCase();
    Array.prototype.forEach.call(document.querySelectorAll("section.board"),function(sec){
      sec.hidden=!(s.table==="all"||s.table===sec.id);
      var table=sec.querySelector("table");var shown=0,total=0;
      Array.prototype.forEach.call(table.tBodies[0].rows,function(r){
        total++;var ok=r.getAttribute("data-method").toLowerCase().indexOf(q)>=0&&
          (s.refs||r.getAttribute("data-ref")!=="1")&&(!s.errs||r.getAttribute("data-err")!=="0");
        r.hidden=!ok;if(ok)shown++;});
      sec.querySelector(".count").textContent=shown+" of "+total+" methods shown";
      if(s.sort&&s.sort.table===sec.id)sortTable(table,s.sort.col,s.sort.dir);
    });
  }
  var cur=state();
  document.addEventListener("DOMContentLoaded",function(){
    apply(cur);
    Array.prototype.forEach.call(document.querySelectorAll("section.board"),function(sec){
      Array.prototype.forEach.call(sec.querySelectorAll("thead th"),function(th,i){
        th.addEventListener("click",function(){
          var dir=(cur.sort&&cur.sort.table===sec.id&&cur.sort.col===i&&cur.sort.dir==="desc")?"asc":"desc";
          cur.sort={table:sec.id,col:i,dir:dir};writeHash(cur);apply(cur);});});});
    document.getElementById("q").addEventListener("input",function(e){cur.q=e.target.value;writeHash(cur);apply(cur);});
    document.getElementById("refs").addEventListener("change",function(e){cur.refs=e.target.checked;writeHash(cur);apply(cur);});
    document.getElementById("errs").addEventListener("change",function(e){cur.errs=e.target.checked;writeHash(cur);apply(cur);});
    document.getElementById("table").addEventListener("change",function(e){cur.table=e.target.value;writeHash(cur);apply(cur);});
    window.addEventListener("hashchange",function(){cur=state();apply(cur);});
    document.body.setAttribute("data-ready","1");
  });
})();
"""


def _v(x: float | None) -> str:
    return "" if x is None else repr(round(float(x), 6))


def _stat_td(s: Stat, extra: str = "") -> str:
    if s.mean is None:
        return '<td data-v="">-</td>'
    ci = "" if s.low is None else f' <span class="ci">[{fmt(s.low, 2)}, {fmt(s.high, 2)}]</span>'
    return f'<td data-v="{_v(s.mean)}">{fmt(s.mean)}{ci}{extra}</td>'


def _cell_td(c: Cell | None) -> str:
    if c is None:
        return '<td data-v="">-</td>'
    mark = (
        f' <span class="errmark" title="{len(c.errors)} of {c.n} seeds failed (scored 0): '
        f'{escape("; ".join(sorted(set(c.errors.values())))[:300])}">{ERR_MARK}{len(c.errors)}/{c.n}</span>'
        if c.errors
        else ""
    )
    if c.capped:
        mark += (
            f' <span class="capmark" title="{len(c.capped)} of {c.n} seeds reached the CPU-time cap and '
            f'stopped early">{CAP_MARK}{len(c.capped)}</span>'
        )
    if c.all_failed:
        return f'<td class="err" data-v="0">ERROR{mark}</td>'
    return _stat_td(c.score, mark)


def _rank_td(r: Row) -> str:
    if r.rank is None:
        return f'<td data-v="">{"ref" if r.method.reference_row else "-"}</td>'
    return f'<td data-v="{_v(r.rank[0])}" title="mean rank {r.rank[0]:.2f}">{fmt_rank(r.rank)}</td>'


def _row_open(r: Row) -> str:
    cls = ' class="ref"' if r.method.reference_row else ""
    return (
        f'<tr{cls} data-method="{escape(r.method.name)}" data-ref="{int(r.method.reference_row)}" '
        f'data-err="{r.n_errors}">'
    )


def _th(label: str, numeric: bool = True, title: str = "") -> str:
    t = f' title="{escape(title)}"' if title else ""
    return f'<th data-type="{"num" if numeric else "text"}"{t}>{escape(label)}</th>'


def _success_td(r: Row) -> str:
    return (
        f'<td data-v="{_v(r.success.mean)}" title="Wilson 95% interval [{fmt(r.success.low, 2)}, '
        f'{fmt(r.success.high, 2)}]">{r.n_success}/{r.n_runs}</td>'
    )


def _overall(board: Board) -> str:
    t = board.overall
    tiers = sorted({x.tier for x in t.toys})
    head = [
        _th("rank", title="95% rank band"),
        _th("method", False),
        _th("score [95% CI]"),
        _th("success"),
        *[_th(f"T{k}", title=f"tier {k} score") for k in tiers],
        _th("errors"),
        _th("time/cell (s)"),
    ]
    body = []
    for r in t.rows:
        err = (
            f'<td data-v="{r.n_errors}" class="{"err" if r.n_errors else ""}">'
            f"{ERR_MARK + str(r.n_errors) if r.n_errors else '0'}</td>"
        )
        body.append(
            _row_open(r)
            + _rank_td(r)
            + f"<td>{escape(r.method.name)}</td>"
            + _stat_td(r.score, "" if r.complete else " (partial)")
            + _success_td(r)
            + "".join(_stat_td(r.by_tier[k]) if k in r.by_tier else '<td data-v="">-</td>' for k in tiers)
            + err
            + f'<td data-v="{_v(r.wall_time_s)}">'
            f"{wall_text(r.wall_time_s)}</td></tr>"
        )
    return _section(t, head, body)


def _tier(board: Board, t: Table) -> str:
    head = [
        _th("rank", title="95% rank band"),
        _th("method", False),
        *[_th(x.name, title=f"{x.gt_status} ground truth, version {x.version}") for x in t.toys],
        _th("tier score [95% CI]"),
        _th("success"),
    ]
    body = [
        _row_open(r)
        + _rank_td(r)
        + f"<td>{escape(r.method.name)}</td>"
        + "".join(_cell_td(board.cell(r.method.name, x.name)) for x in t.toys)
        + _stat_td(r.score, "" if r.complete else " (partial)")
        + _success_td(r)
        + "</tr>"
        for r in t.rows
    ]
    return _section(t, head, body)


def _section(t: Table, head: list[str], body: list[str]) -> str:
    note = f'<p class="note">{escape(t.note)}.</p>' if t.note else ""
    return (
        f'<section class="board" id="{t.key}"><h2>{escape(t.title)}</h2>{note}<span class="count"></span>\n'
        f'<table class="lb" id="t-{t.key}"><thead><tr>{"".join(head)}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody></table></section>\n"
    )


def render_html(board: Board) -> str:
    options = "".join(f'<option value="{t.key}">{escape(t.title)}</option>' for t in [board.overall, *board.tiers])
    legend_html = re.sub(r"`([^`]*)`", r"<code>\1</code>", escape(legend(board), quote=False))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pdbench leaderboard</title>
<style>{CSS}</style>
<script>{JS}</script>
</head><body>
<h1>pdbench leaderboard</h1>
<p class="legend">{legend_html} Click a column header to sort; the view is kept in the page address.</p>
<div class="controls">
<label>Method <input type="search" id="q" placeholder="filter by name"></label>
<label><input type="checkbox" id="refs" checked> reference rows</label>
<label><input type="checkbox" id="errs"> only rows with failed seeds</label>
<label>Table <select id="table"><option value="all">all tables</option>{options}</select></label>
</div>
{_overall(board)}{"".join(_tier(board, t) for t in board.tiers)}
<h2>Figures and files</h2>
<p class="note">Beside this page: <a href="leaderboard.csv">leaderboard.csv</a> (every statistic),
<a href="cells.csv">cells.csv</a> (every result), <a href="LEADERBOARD.md">LEADERBOARD.md</a>,
<a href="latex/overall.tex">latex/</a> (booktabs tables) and
<a href="figures/score_by_tier.pdf">figures/</a> (PNG, PDF).</p>
<p><img src="figures/score_by_tier.png" alt="score by tier, per method, with 95% intervals" style="max-width:100%"></p>
<p><img src="figures/score_vs_time.png" alt="overall score against wall time per cell" style="max-width:100%"></p>
</body></html>
"""
