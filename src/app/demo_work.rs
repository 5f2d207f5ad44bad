//! The transformer demo inside the app, apart from its widgets: its inputs (read from the cache
//! folder natively, fetched from the server's `transformer/` folder in the browser), the attack
//! in progress and its last outcome.

use crate::engine::Engine;
use crate::transformer_scenario::{AttackDemo, DemoInputs, DemoOutcome, DemoSettings};
use std::cell::RefCell;
use std::rc::Rc;
use web_time::Instant;

/// The files the browser demo fetches, relative to the page (web/build.sh copies them there).
#[cfg(target_arch = "wasm32")]
const DEMO_URLS: [&str; 3] = [
    "transformer/released.safetensors",
    "transformer/tokenizer.json",
    "transformer/data.noun",
];

/// Where a load in flight leaves its result.
type Arrival = Rc<RefCell<Option<Result<DemoInputs, String>>>>;

#[derive(Default)]
pub struct DemoWork {
    pub settings: DemoSettings,
    pub inputs: Option<DemoInputs>,
    loading: Option<Arrival>,
    attack: Option<AttackDemo>,
    pub outcome: Option<DemoOutcome>,
    /// Start the attack as soon as the inputs arrive (the page's `?transformer`).
    pub attack_when_loaded: bool,
}

/// How a load or an attack ended.
pub enum DemoEnd {
    Loaded(String),
    Finished(String),
    Failed(String),
}

impl DemoWork {
    pub fn is_busy(&self) -> bool {
        self.loading.is_some() || self.attack.is_some()
    }

    /// What it is doing, for the user.
    pub fn status(&self) -> Option<String> {
        if self.loading.is_some() {
            return Some("loading the released classifier, its tokenizer and WordNet".into());
        }
        self.attack.as_ref().map(AttackDemo::describe)
    }

    /// Starts loading the inputs: natively a read of the cache folder (done before this
    /// returns), in the browser a fetch the page's event loop completes.
    pub fn load(&mut self) {
        let arrival = Arrival::default();
        #[cfg(not(target_arch = "wasm32"))]
        {
            let released = crate::transformer_files::released_path();
            *arrival.borrow_mut() = Some(DemoInputs::from_files(&released));
        }
        #[cfg(target_arch = "wasm32")]
        {
            let slot = Rc::clone(&arrival);
            wasm_bindgen_futures::spawn_local(async move {
                let fetched = fetch_inputs().await;
                *slot.borrow_mut() = Some(fetched);
            });
        }
        self.loading = Some(arrival);
    }

    pub fn start_attack(&mut self) -> Result<(), String> {
        let inputs = (self.inputs.as_ref()).ok_or("load the released classifier first")?;
        self.attack = Some(
            AttackDemo::start(inputs, self.settings.clone())
                .map_err(|e| format!("transformer demo: {e}"))?,
        );
        Ok(())
    }

    pub fn stop(&mut self) {
        self.attack = None;
        self.loading = None;
    }

    /// Advances a load or an attack until `deadline`, never waiting for the GPU; says how it
    /// ended when it did.
    pub fn advance(&mut self, engine: &mut dyn Engine, deadline: Instant) -> Option<DemoEnd> {
        if let Some(arrival) = &self.loading {
            let arrived = arrival.borrow_mut().take()?;
            self.loading = None;
            let inputs = match arrived {
                Ok(inputs) => inputs,
                Err(e) => return Some(DemoEnd::Failed(format!("transformer demo: {e}"))),
            };
            let measured = &inputs.released.measured;
            let loaded = format!(
                "loaded the released classifier of {} ({} blocks): harmful accuracy {:.3} \
                 (before suppression {:.3}), utility {:.3}",
                inputs.released.scenario.name,
                inputs.released.scenario.encoder.blocks,
                measured.harmful_accuracy,
                measured.harmful_accuracy_before_suppression,
                measured.utility_accuracy
            );
            self.inputs = Some(inputs);
            if !std::mem::take(&mut self.attack_when_loaded) {
                return Some(DemoEnd::Loaded(loaded));
            }
            if let Err(e) = self.start_attack() {
                return Some(DemoEnd::Failed(e));
            }
        }
        let (Some(attack), Some(inputs)) = (&mut self.attack, &self.inputs) else {
            return None;
        };
        while !attack.is_done() && Instant::now() < deadline {
            match attack.advance(engine, inputs) {
                Ok(true) => {}
                // A readback is in flight: the GPU finishes it in the meantime.
                Ok(false) => break,
                Err(e) => {
                    self.attack = None;
                    return Some(DemoEnd::Failed(format!("transformer demo: {e}")));
                }
            }
        }
        if !attack.is_done() {
            return None;
        }
        let outcome = attack.outcome(inputs);
        self.attack = None;
        let models: Vec<String> = (outcome.models.iter())
            .map(|m| {
                format!(
                    "{} {:.3} -> {:.3}",
                    m.model, m.harmful_accuracy_before, m.harmful_accuracy_after
                )
            })
            .collect();
        let summary = format!(
            "transformer demo finished: harmful held-out accuracy after {} {} steps at lr {:.0e}: {}",
            outcome.settings.steps,
            outcome.settings.optimizer.name(),
            outcome.settings.lr,
            models.join(", ")
        );
        self.outcome = Some(outcome);
        Some(DemoEnd::Finished(summary))
    }
}

#[cfg(target_arch = "wasm32")]
async fn fetch_inputs() -> Result<DemoInputs, String> {
    let [released, tokenizer, data_noun] = DEMO_URLS;
    let released = super::page::fetch_bytes(released).await?;
    let text = |bytes: Vec<u8>, url: &str| {
        String::from_utf8(bytes).map_err(|_| format!("{url}: not UTF-8 text"))
    };
    let tokenizer = text(super::page::fetch_bytes(tokenizer).await?, tokenizer)?;
    let data_noun = text(super::page::fetch_bytes(data_noun).await?, data_noun)?;
    DemoInputs::from_bytes(&released, &tokenizer, &data_noun).map_err(|e| e.to_string())
}
