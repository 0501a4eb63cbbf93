/* [n] links open and reveal their source entry (a <details> further down the same answer). */
document.addEventListener('click', function (e) {
  var a = e.target.closest ? e.target.closest('a.rag-cite') : null;
  if (!a) return;
  var el = document.getElementById((a.getAttribute('href') || '').slice(1));
  if (!el) return;
  e.preventDefault();
  for (var d = el; d; d = d.parentElement ? d.parentElement.closest('details') : null) d.open = true;
  el.scrollIntoView({behavior: 'smooth', block: 'center'});
  el.classList.remove('rag-flash'); void el.offsetWidth; el.classList.add('rag-flash');
}, true);
/* A streamed answer is re-rendered on every token; keep the sources the reader opened open. */
var ragOpen = new Set();
document.addEventListener('toggle', function (e) {
  var d = e.target;
  if (!d.classList || !d.classList.contains('rag-src') || !d.id) return;
  if (d.open) ragOpen.add(d.id); else if (d.isConnected) ragOpen.delete(d.id);
}, true);
new MutationObserver(function () {
  ragOpen.forEach(function (id) { var d = document.getElementById(id); if (d && !d.open) d.open = true; });
}).observe(document.documentElement, {childList: true, subtree: true});
