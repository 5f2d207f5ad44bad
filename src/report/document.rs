//! `specdef report`: one self-contained HTML page (figures inlined as SVG, no network, no
//! script) and its markdown twin (figures as SVG files beside it), both built from the same
//! sections: what ran, the claims table, the figures, the main table, the success windows, the
//! adaptive attacks, the immunisation report, the strongest attack under a utility bound, the
//! attacker's search and the precision frontier.

use super::claims::{Claim, Verdict, claims};
use super::{
    adaptive_table, distinct, immunisation_table, main_table, success_window_table, trials_table,
    utility_bound_table,
};
use crate::record::RunRecord;

/// A figure: its file name (the markdown twin links to it) and its SVG text.
pub type Figure = (String, String);

/// The figures in the order the report shows them: the success windows first (the one that
/// says it at a glance), then steps to target, then the loss curves.
fn ordered(figures: &[Figure]) -> Vec<&Figure> {
    let rank = |name: &str| match name {
        "slowdown.svg" => 0,
        "success_windows.svg" => 1,
        "best_attack_vs_trials.svg" => 2,
        "steps_to_target.svg" => 3,
        _ => 4,
    };
    let mut out: Vec<&Figure> = figures.iter().collect();
    out.sort_by_key(|(name, _)| rank(name));
    out
}

/// One line naming what produced the records.
fn provenance(records: &[RunRecord]) -> String {
    let scenarios = distinct(records.iter().map(|r| match &r.variant {
        Some(v) => format!("{} (variant {v})", r.scenario),
        None => r.scenario.clone(),
    }));
    let engines = distinct(
        records
            .iter()
            .map(|r| format!("{} on {}", r.engine, r.adapter)),
    );
    let versions = distinct(records.iter().map(|r| r.crate_version.clone()));
    format!(
        "{} runs of {}; computed by {}; specdef {}",
        records.len(),
        scenarios.join(", "),
        engines.join(", "),
        versions.join(", ")
    )
}

/// Function preservation per model, from the records (the run engine's error).
fn precision_text(records: &[RunRecord]) -> String {
    let mut out = format!(
        "{:<40} {:>10} {:>22}\n",
        "model", "params", "max / mean rel. error"
    );
    for label in distinct(records.iter().map(RunRecord::defense_label)) {
        if let Some(r) = records.iter().find(|r| r.defense_label() == label) {
            out.push_str(&format!(
                "{label:<40} {:>10} {:>22}\n",
                r.parameter_count,
                format!(
                    "{:.1e} / {:.1e}",
                    r.function_error_max, r.function_error_mean
                )
            ));
        }
    }
    let frontiers = super::frontiers(records);
    if !frontiers.is_empty() {
        out.push('\n');
    }
    for frontier in frontiers {
        out.push_str(&format!("frontier, {}\n", frontier.describe()));
    }
    out
}

/// The sections shared by both forms: (title, preformatted text).
fn text_sections(records: &[RunRecord]) -> Vec<(&'static str, String)> {
    let mut sections = vec![
        ("Main table", main_table(records)),
        ("Success windows", success_window_table(records)),
    ];
    if let Some(slowdown) = super::slowdown_table(records) {
        sections.push(("Slowdown: the paper's table and the steps ratio", slowdown));
    }
    if let Some(adaptive) = adaptive_table(records) {
        sections.push(("Adaptive attacks and their overhead", adaptive));
    }
    sections.push((
        "Immunisation report (resistance, stability, generalisation, trainability)",
        immunisation_table(records),
    ));
    sections.push((
        "Strongest attack under a utility bound",
        utility_bound_table(records),
    ));
    sections.push(("The attacker's search", trials_table(records)));
    sections.push((
        "Precision frontier (function preservation against the undefended model in f64)",
        precision_text(records),
    ));
    sections
}

fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The report in markdown; figures are linked by file name.
pub fn markdown(records: &[RunRecord], figures: &[Figure]) -> String {
    let mut out = format!(
        "# specdef report\n\n{}\n\n## The claims against the measurements\n\n",
        provenance(records)
    );
    out.push_str(
        "Verdicts count a run that reaches the harmful target as a success only where it keeps \
         utility (the paper's collapse criterion: the utility loss up by at most ln 2); the \
         column beside gives the verdict without it.\n\n\
         | source | protocol | claim | setting | measured | verdict | without the criterion | \
         would change if |\n|---|---|---|---|---|---|---|---|\n",
    );
    for c in claims(records) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | **{}** | {} | {} |\n",
            c.source,
            c.protocol.name(),
            markdown_cell(c.claim),
            markdown_cell(&c.setting),
            markdown_cell(&c.measured),
            c.verdict.name(),
            c.verdict_target_only.name(),
            markdown_cell(c.would_change),
        ));
    }
    out.push_str("\n## Figures\n\n");
    for (name, _) in ordered(figures) {
        out.push_str(&format!("![{}]({name})\n\n", name.trim_end_matches(".svg")));
    }
    for (title, text) in text_sections(records) {
        out.push_str(&format!("## {title}\n\n```\n{text}```\n\n"));
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn claims_html(claims: &[Claim]) -> String {
    let mut out = String::from(
        "<p>Verdicts count a run that reaches the harmful target as a success only where it keeps \
         utility (the paper's collapse criterion: the utility loss up by at most ln 2); the \
         column beside gives the verdict without it.</p>\n\
         <table id=\"claims\"><thead><tr><th>source</th><th>protocol</th><th>claim</th>\
         <th>setting</th><th>measured</th><th>verdict</th><th>without the criterion</th>\
         <th>would change if</th></tr></thead><tbody>\n",
    );
    for c in claims {
        let class = |v: Verdict| v.name().replace(' ', "-");
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td>\
             <td class=\"{}\">{}</td><td>{}</td></tr>\n",
            escape(c.source),
            c.protocol.name(),
            escape(c.claim),
            escape(&c.setting),
            escape(&c.measured),
            class(c.verdict),
            c.verdict.name(),
            class(c.verdict_target_only),
            c.verdict_target_only.name(),
            escape(c.would_change),
        ));
    }
    out.push_str("</tbody></table>\n");
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;\
color:#222}table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #bbb;\
padding:4px 6px;vertical-align:top;text-align:left}pre{font-size:0.8em;overflow-x:auto;\
background:#f6f6f6;padding:0.5em}.held{background:#d8f0d8}.did-not-hold{background:#f6d4d4}\
.not-measured{background:#eee}figure{margin:1em 0}figure svg{max-width:100%;height:auto}";

/// The report as one HTML page: figures inlined, no script, nothing fetched.
pub fn html(records: &[RunRecord], figures: &[Figure]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>specdef report</title><style>{STYLE}</style></head><body>\n\
         <h1>specdef report</h1>\n<p id=\"provenance\">{}</p>\n\
         <h2>The claims against the measurements</h2>\n{}",
        escape(&provenance(records)),
        claims_html(&claims(records))
    );
    out.push_str("<h2>Figures</h2>\n");
    for (name, svg) in ordered(figures) {
        // plotters writes a bare <svg> element with its width and height: inlined as is.
        let body = svg.trim_start_matches(|c| c != '<');
        let body = match body.find("<svg") {
            Some(at) => &body[at..],
            None => body,
        };
        out.push_str(&format!(
            "<figure>{body}<figcaption>{}</figcaption></figure>\n",
            escape(name)
        ));
    }
    for (title, text) in text_sections(records) {
        out.push_str(&format!(
            "<h2>{}</h2>\n<pre>{}</pre>\n",
            escape(title),
            escape(&text)
        ));
    }
    out.push_str("</body></html>\n");
    out
}
