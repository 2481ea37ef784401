/// The monitor's one page: HTML, CSS and a script with no outside resources (it must load
/// in a lab with no internet). The script opens `/ws` and redraws from each snapshot; every
/// figure it shows carries its number in a `data-value` attribute, which the tests read.
enum MonitorPage {
    static let html = #"""
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>Herald monitor</title>
        <meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
        <style>
        body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
        header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
        header h1{font-size:18px;margin:0} .muted{color:#8a93a6}
        #state{font-weight:700;padding:2px 8px;border-radius:4px;background:#2e7d32}
        #state.paused{background:#c62828} #state.stopped{background:#455a64} #state.starting{background:#6d4c41}
        #pause{display:none;background:#ffebee;color:#b71c1c;border-left:6px solid #c62828;padding:10px 18px;font-weight:600}
        main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px;padding:14px}
        section{background:#fff;border-radius:6px;padding:10px 14px;box-shadow:0 1px 2px #0002}
        h2{font-size:14px;margin:0 0 6px;text-transform:uppercase;letter-spacing:.05em;color:#51607a}
        table{border-collapse:collapse;width:100%} td,th{padding:2px 6px;text-align:right;border-bottom:1px solid #eee}
        td:first-child,th:first-child{text-align:left}
        .bar{height:10px;background:#e3e7ee;border-radius:5px;overflow:hidden}.bar>div{height:100%;background:#1976d2}
        svg{width:100%;height:auto} .ok{color:#2e7d32}.bad{color:#c62828;font-weight:700}
        #log{font:12px monospace;white-space:pre-wrap;max-height:160px;overflow:auto}
        </style></head><body>
        <header><h1 id="run-name">Herald</h1><span id="state" class="starting">CONNECTING</span>
        <span class="muted" id="run-id"></span><span class="muted" id="step"></span></header>
        <div id="pause"></div>
        <main>
        <section><h2>Progress</h2>
         <div>point <b id="points-done" data-value="0">0</b> of <b id="points-total" data-value="0">0</b>
          &nbsp; now: <span id="current-point">–</span></div>
         <div class="bar"><div id="progress-bar" style="width:0"></div></div>
         <div>acquired <span id="acquired">0</span> of <span id="planned">0</span> s · left <span id="eta" data-value="">–</span>
          · tags <span id="tags" data-value="0">0</span> · <span id="tag-rate" data-value="0">0</span> tags/s</div>
         <h2 style="margin-top:10px">Interlocks</h2><table id="interlocks"></table>
         <h2 style="margin-top:10px">Nodes</h2><table id="nodes"><tr><td class="muted">no nodes</td></tr></table>
        </section>
        <section><h2>Coincidence rates (analysed pairs)</h2><table id="pairs"></table><svg id="pair-trace" viewBox="0 0 420 180"></svg></section>
        <section><h2>Singles rates</h2><table id="singles"></table><svg id="singles-trace" viewBox="0 0 420 180"></svg></section>
        <section><h2>Per-point results</h2><div id="results"></div></section>
        <section><h2>Analyses</h2><div id="analyses" class="muted">none yet</div></section>
        <section id="entanglement-section"><h2>Heralded entanglement</h2><table id="entanglement"></table><svg id="herald-trace" viewBox="0 0 420 180"></svg></section>
        <section><h2>Pauses</h2><table id="pauses"><tr><td class="muted">none</td></tr></table><h2 style="margin-top:10px">Log</h2><div id="log"></div></section>
        </main>
        <script>
        "use strict";
        const $=id=>document.getElementById(id);
        const esc=s=>String(s).replace(/[&<>"']/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
        function fmt(v,e){if(v===null||v===undefined||!isFinite(v))return "–";
          if(e&&isFinite(e)&&e>0){const d=Math.max(0,1-Math.floor(Math.log10(e)));return v.toFixed(d)+" ± "+e.toFixed(d);}
          const a=Math.abs(v);return a!==0&&(a<1e-3||a>=1e6)?v.toExponential(3):(+v.toPrecision(6)).toString();}
        const colours=["#1976d2","#c62828","#2e7d32","#f9a825","#6a1b9a","#00838f","#ef6c00","#5d4037"];
        // A line plot: series [{name, points:[[x,y],...]}], pauses shaded on the x axis.
        function plot(svg,series,opt){const W=420,H=180,L=52,R=8,T=8,B=26;let xs=[],ys=[];
          series.forEach(s=>s.points.forEach(p=>{xs.push(p[0]);ys.push(p[1]);}));
          if(!xs.length){svg.innerHTML='<text x="210" y="90" text-anchor="middle" fill="#999">waiting for data</text>';return;}
          let x0=Math.min(...xs),x1=Math.max(...xs),y0=Math.min(0,...ys),y1=Math.max(...ys);if(x1===x0)x1=x0+1;if(y1===y0)y1=y0+1;
          const X=x=>L+(x-x0)/(x1-x0)*(W-L-R),Y=y=>H-B-(y-y0)/(y1-y0)*(H-T-B);let out="";
          (opt&&opt.pauses||[]).forEach(p=>{const a=X(Math.max(x0,p.startS)),b=X(Math.min(x1,p.stopS===null||p.stopS===undefined?x1:p.stopS));
            if(b>=a)out+=`<rect class="pause-band" x="${a}" y="${T}" width="${Math.max(1,b-a)}" height="${H-T-B}" fill="#ffcdd2"/>`;});
          out+=`<line x1="${L}" y1="${H-B}" x2="${W-R}" y2="${H-B}" stroke="#999"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H-B}" stroke="#999"/>`;
          out+=`<text x="${L-4}" y="${T+8}" font-size="10" text-anchor="end">${fmt(y1)}</text><text x="${L-4}" y="${H-B}" font-size="10" text-anchor="end">${fmt(y0)}</text>`;
          out+=`<text x="${L}" y="${H-8}" font-size="10">${fmt(x0)}</text><text x="${W-R}" y="${H-8}" font-size="10" text-anchor="end">${fmt(x1)} ${esc(opt&&opt.xlabel||"s")}</text>`;
          series.forEach((s,i)=>{const c=colours[i%colours.length];
            out+=`<polyline fill="none" stroke="${c}" stroke-width="1.5" points="${s.points.map(p=>X(p[0])+","+Y(p[1])).join(" ")}"/>`;
            s.points.forEach(p=>{out+=`<circle cx="${X(p[0])}" cy="${Y(p[1])}" r="2" fill="${c}" data-x="${p[0]}" data-value="${p[1]}"/>`;});
            out+=`<text x="${W-R-4}" y="${T+12+12*i}" font-size="10" text-anchor="end" fill="${c}">${esc(s.name)}</text>`;});
          svg.innerHTML=out;}
        // ρ as a cityscape: one isometric bar per element, height the value (negative downwards).
        function city(part,rho,n,title){const W=200,H=170,s=14,ox=100,oy=100,h=60;
          const m=Math.max(1e-9,...rho.map(Math.abs));let out=`<text x="4" y="12" font-size="11">${esc(title)}</text>`;
          const pt=(i,j,z)=>[ox+(j-i)*s,oy+(i+j)*s*0.5-z];
          for(let i=0;i<n;i++)for(let j=0;j<n;j++){const v=rho[i*n+j],z=v/m*h,c=v>=0?"#1976d2":"#c62828";
            const a=pt(i,j,0),b=pt(i,j+1,0),d=pt(i+1,j,0),e=pt(i+1,j+1,0),ta=pt(i,j,z),tb=pt(i,j+1,z),td=pt(i+1,j,z),te=pt(i+1,j+1,z);
            const poly=(ps,f)=>`<polygon points="${ps.map(p=>p.join(",")).join(" ")}" fill="${f}" stroke="#fff" stroke-width=".5"/>`;
            out+=`<g class="rho-bar" data-part="${part}" data-row="${i}" data-col="${j}" data-value="${v}">`+poly([d,e,te,td],c+"bb")+poly([b,e,te,tb],c+"88")+poly([ta,tb,te,td],c)+`</g>`;}
          return `<svg viewBox="0 0 ${W} ${H}" style="width:49%">${out}</svg>`;}
        function rows(el,header,body){el.innerHTML=(header?"<tr>"+header.map(h=>`<th>${esc(h)}</th>`).join("")+"</tr>":"")+body.join("");}
        function render(s){
          document.title=(s.state==="paused"?"PAUSED · ":"")+(s.run?s.run.name:"Herald")+" · Herald monitor";
          if(s.run){$("run-name").textContent=s.run.name;$("run-id").textContent="run "+s.run.runID+(s.run.mock?" · simulated":"");}
          const st=$("state");st.className=s.state;st.dataset.value=s.state;
          st.textContent=s.state==="stopped"?("STOPPED · "+(s.status||"")):s.state.toUpperCase();
          $("step").textContent=s.step||"";
          const pz=$("pause");if(s.pause){pz.style.display="block";pz.dataset.interlock=s.pause.interlock;
            pz.textContent=`PAUSED: ${s.pause.interlock} (${s.pause.condition}) since ${fmt(s.pause.startS)} s lab time; tags are kept, not counted`;}
          else{pz.style.display="none";pz.textContent="";delete pz.dataset.interlock;}
          $("points-done").textContent=s.pointsDone;$("points-done").dataset.value=s.pointsDone;
          $("points-total").textContent=s.pointsTotal;$("points-total").dataset.value=s.pointsTotal;
          $("current-point").textContent=s.point?`${s.point.sweep} ${s.point.index+1}/${s.point.of} ${s.point.label}`:"–";
          $("progress-bar").style.width=(s.plannedSeconds>0?Math.min(100,100*s.acquiredSeconds/s.plannedSeconds):0)+"%";
          $("acquired").textContent=fmt(s.acquiredSeconds);$("planned").textContent=fmt(s.plannedSeconds);
          $("eta").textContent=s.etaSeconds===null||s.etaSeconds===undefined?"–":s.etaSeconds.toFixed(1)+" s";$("eta").dataset.value=s.etaSeconds??"";
          $("tags").textContent=s.tags;$("tags").dataset.value=s.tags;$("tag-rate").textContent=fmt(s.tagRate);$("tag-rate").dataset.value=s.tagRate;
          rows($("interlocks"),null,(s.run?s.run.interlocks:[]).map(i=>`<tr data-interlock="${esc(i.name)}" data-value="${i.ok?1:0}"><td>${esc(i.name)}</td><td class="muted">${esc(i.condition)}</td><td class="${i.ok?"ok":"bad"}">${i.ok?"holds":"VIOLATED"}</td></tr>`));
          if(s.nodes.length)rows($("nodes"),null,s.nodes.map(n=>`<tr data-node="${esc(n.name)}" data-value="${n.up?1:0}"><td>${esc(n.name)}</td><td class="muted">${esc(n.address)}</td><td class="${n.up?"ok":"bad"}">${n.up?"up":"DOWN"}</td><td class="muted">${esc(n.detail)}</td></tr>`));
          rows($("pairs"),["pair","latest point (s⁻¹)","coincidences"],s.pairs.map(p=>{const l=p.trace[p.trace.length-1];
            return `<tr data-pair="${p.a}-${p.b}"><td>${p.a}-${p.b}</td><td class="rate" data-value="${l?l.value:""}">${l?fmt(l.value,l.error):"–"}</td><td class="count" data-value="${p.coincidences}">${p.coincidences}</td></tr>`;}));
          plot($("pair-trace"),s.pairs.map(p=>({name:p.a+"-"+p.b,points:p.trace.map(q=>[q.t,q.value])})),{pauses:s.pauses.concat(s.pause?[s.pause]:[])});
          rows($("singles"),["tagger · channel","latest (s⁻¹)"],s.singles.map(c=>{const l=c.trace[c.trace.length-1];
            return `<tr data-channel="${c.channel}" data-tagger="${esc(c.device)}"><td>${esc(c.device)} · ${c.channel}</td><td class="rate" data-value="${l?l.value:""}">${l?fmt(l.value,l.error):"–"}</td></tr>`;}));
          plot($("singles-trace"),s.singles.map(c=>({name:c.device+" "+c.channel,points:c.trace.map(q=>[q.t,q.value])})),{pauses:s.pauses.concat(s.pause?[s.pause]:[])});
          const bySweep={};s.results.forEach(r=>{const k=r.sweep+(r.outer?" @ "+r.outer:"");(bySweep[k]=bySweep[k]||[]).push(r);});
          $("results").innerHTML=Object.keys(bySweep).map((k,n)=>{const rs=bySweep[k];const pairs=[...new Set(rs.flatMap(r=>Object.keys(r.rates)))];
            return `<h3 style="font-size:13px;margin:4px 0">${esc(k)} <span class="muted">(${rs.length} points; x: point index)</span></h3><svg class="result-plot" data-sweep="${esc(k)}" id="result-${n}" viewBox="0 0 420 180"></svg>`;}).join("");
          Object.keys(bySweep).forEach((k,n)=>{const rs=bySweep[k];const pairs=[...new Set(rs.flatMap(r=>Object.keys(r.rates)))];
            plot($("result-"+n),pairs.map(p=>({name:p,points:rs.filter(r=>r.rates[p]).map(r=>[r.index,r.rates[p].value])})),{xlabel:"point"});});
          $("analyses").innerHTML=s.analyses.length?s.analyses.map(a=>{let h=`<h3 style="font-size:13px;margin:6px 0 2px">${esc(a.name)}${a.outer?" @ "+esc(a.outer):""} <span class="muted">${esc(a.estimator)}</span></h3><table>`;
            Object.keys(a.values).sort().forEach(k=>{h+=`<tr class="figure" data-analysis="${esc(a.name)}" data-key="${esc(k)}" data-value="${a.values[k]}"><td>${esc(k)}</td><td>${fmt(a.values[k],a.uncertainties[k])}</td></tr>`;});
            h+="</table>";if(a.dimension>0)h+=`<div class="cityscape">${city("real",a.rhoReal,a.dimension,"Re ρ")}${city("imag",a.rhoImag,a.dimension,"Im ρ")}</div>`;return h;}).join(""):"none yet";
          const e=s.entanglement;$("entanglement-section").style.display=(e.heralds||e.attempts)?"block":"none";
          rows($("entanglement"),null,[`<tr data-key="heralds" data-value="${e.heralds}"><td>heralds</td><td>${e.heralds}</td></tr>`,
            `<tr data-key="attempts" data-value="${e.attempts}"><td>attempts</td><td>${e.attempts}</td></tr>`,
            `<tr data-key="herald_rate" data-value="${e.rate.length?e.rate[e.rate.length-1].value:""}"><td>herald rate (s⁻¹)</td><td>${e.rate.length?fmt(e.rate[e.rate.length-1].value,e.rate[e.rate.length-1].error):"–"}</td></tr>`,
            `<tr data-key="fidelity" data-value="${e.fidelity??""}"><td>fidelity ${esc(e.fidelityTarget||"")}</td><td>${fmt(e.fidelity,e.fidelityError)}</td></tr>`]);
          plot($("herald-trace"),[{name:"heralds/s",points:e.rate.map(q=>[q.t,q.value])}],{pauses:s.pauses});
          if(s.pauses.length)rows($("pauses"),["interlock","from (s)","to (s)"],s.pauses.map(p=>`<tr class="pause-row"><td>${esc(p.interlock)}</td><td>${fmt(p.startS)}</td><td>${fmt(p.stopS)}</td></tr>`));
          $("log").textContent=s.log.join("\n");
          document.body.dataset.version=s.version;}
        function connect(){const ws=new WebSocket((location.protocol==="https:"?"wss://":"ws://")+location.host+"/ws"+location.search);
          ws.onmessage=m=>{try{render(JSON.parse(m.data));}catch(err){console.error(err);}};
          ws.onclose=()=>{const st=$("state");if(!st.className.startsWith("stopped")&&st.className!=="stopped"){st.textContent+=" · feed closed";}};}
        connect();
        </script></body></html>
        """#
}
