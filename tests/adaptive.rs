//! The adaptive attacker's rewrites (PAPER.md section 5): each keeps the defended model's
//! function, costs the parameters it should, and runs as part of a scenario.

mod common;

use common::run_quietly;
use specdef::attack::{AdaptiveAttack, LoraPlacement};
use specdef::defense::{LayerSelection, SpecDef};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::{Engine, Recording};
use specdef::linalg::faer_svd;
use specdef::model::{
    ActivationChoice, DeviceModel, FactorRole, Gradients, HostModel, ModelSpec, ParamGroup,
    ParamKey, ParamRole, Trainable, Workspace, graph, predict,
};
use specdef::scenario::Scenario;
use specdef::training::{OptimizerKind, OptimizerState};

const ALPHA: f64 = 1e4;

fn spec() -> ModelSpec {
    ModelSpec {
        widths: vec![64, 24, 16, 10],
        activation: ActivationChoice::Relu,
    }
}

fn defended(layers: LayerSelection) -> (HostModel, HostModel) {
    let base = HostModel::init(&spec(), 3);
    let defense = SpecDef {
        alpha: ALPHA,
        k: 6,
        layers,
        compensate: true,
        compensation: Default::default(),
    };
    let defended = defense.apply(&base, 3).unwrap();
    (base, defended)
}

fn inputs() -> Vec<f64> {
    (0..32 * 64)
        .map(|i| ((i * 37 % 101) as f64) / 101.0)
        .collect()
}

/// The largest difference of two models' logits (f64 engine), relative to the largest logit.
fn function_difference(a: &HostModel, b: &HostModel) -> f64 {
    let x = inputs();
    let ya = predict(&mut CpuEngine64::new(), a, &x).unwrap();
    let yb = predict(&mut CpuEngine64::new(), b, &x).unwrap();
    let scale = ya.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = ya
        .iter()
        .zip(&yb)
        .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    diff / scale
}

fn every_attack() -> Vec<AdaptiveAttack> {
    [
        "fusion",
        "injection",
        "injection-unlocked",
        "factorisation",
        "factorisation:2",
        "factorisation:3",
        "factorisation-locked",
        "factorisation-locked:3",
        "factorisation-fused",
        "factorisation-fused:2",
        "lora-weight",
        "lora-compensation:4",
        "lora-both",
        "lora-fused:2",
    ]
    .iter()
    .map(|name| name.parse().unwrap())
    .collect()
}

#[test]
fn every_rewrite_keeps_the_defended_models_function() {
    let (_, model) = defended(LayerSelection::All);
    for attack in every_attack() {
        let rewritten = attack.apply(&model, ALPHA, 7).unwrap();
        let difference = function_difference(&model, &rewritten);
        // f64 throughout; the rewrite's rounding is amplified by at most alpha.
        assert!(
            difference < 1e-9,
            "{attack}: logits moved by {difference:e} of their scale"
        );
        eprintln!("{attack}: relative logit difference {difference:.1e}");
    }
}

#[test]
fn fusion_gives_back_the_undefended_weights_and_parameter_count() {
    let (base, model) = defended(LayerSelection::All);
    let fused = AdaptiveAttack::Fusion.apply(&model, ALPHA, 0).unwrap();
    assert_eq!(fused.parameter_count(), base.parameter_count());
    for (i, (f, b)) in fused.layers.iter().zip(&base.layers).enumerate() {
        assert!(f.is_plain(), "layer {i} is still a chain: {}", f.form());
        let (w, w0) = (
            f.matrix(FactorRole::Weight).unwrap(),
            b.matrix(FactorRole::Weight).unwrap(),
        );
        let largest = w0.values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let off = w
            .values
            .iter()
            .zip(&w0.values)
            .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            off <= 1e-9 * largest,
            "layer {i}: fused weight off W by {off:e}"
        );
    }
}

/// (p - 1) r^2 per factorised layer (r = min(in, out)); m^2 per injected one.
#[test]
fn overheads_are_linear_in_the_factor_count_and_the_defended_layers() {
    for (layers, chosen) in [
        (LayerSelection::All, vec![0, 1, 2]),
        (LayerSelection::Indices(vec![0, 2]), vec![0, 2]),
    ] {
        let (_, model) = defended(layers);
        let shapes: Vec<(usize, usize)> = chosen.iter().map(|&i| spec().layer_shape(i)).collect();
        let params = model.parameter_count() as i64;
        for p in [2u16, 3, 5] {
            let attack: AdaptiveAttack = format!("factorisation:{p}").parse().unwrap();
            let added = attack.apply(&model, ALPHA, 0).unwrap().parameter_count() as i64 - params;
            let expected: usize = shapes
                .iter()
                .map(|&(n, m)| (p as usize - 1) * n.min(m).pow(2))
                .sum();
            assert_eq!(added, expected as i64, "p = {p}, layers {chosen:?}");
        }
        for injection in ["injection", "injection-unlocked"] {
            let attack: AdaptiveAttack = injection.parse().unwrap();
            let injected = attack.apply(&model, ALPHA, 0).unwrap();
            let expected: usize = shapes.iter().map(|&(_, m)| m * m).sum();
            assert_eq!(
                injected.parameter_count() as i64 - params,
                expected as i64,
                "{injection}"
            );
        }
        // The fused product's factors replace W~ and C: (p - 1) r^2 - m^2 per layer.
        let fused: AdaptiveAttack = "factorisation-fused:3".parse().unwrap();
        let added = fused.apply(&model, ALPHA, 0).unwrap().parameter_count() as i64 - params;
        let expected: i64 = (shapes.iter())
            .map(|&(n, m)| 2 * n.min(m).pow(2) as i64 - (m * m) as i64)
            .sum();
        assert_eq!(added, expected, "factorisation-fused:3, layers {chosen:?}");
    }
}

#[test]
fn balanced_factors_share_the_top_singular_value_evenly() {
    let (base, model) = defended(LayerSelection::All);
    let p = 4u16;
    let attack: AdaptiveAttack = "factorisation".parse().unwrap();
    assert_eq!(
        attack.factor_count(ALPHA),
        p,
        "alpha 1e4: p with alpha^(1/p) <= 10"
    );
    let rewritten = attack.apply(&model, ALPHA, 0).unwrap();
    for (i, layer) in rewritten.layers.iter().enumerate() {
        let stored = faer_svd(model.layers[i].matrix(FactorRole::Weight).unwrap())
            .unwrap()
            .s[0];
        let undefended = faer_svd(base.layers[i].matrix(FactorRole::Weight).unwrap())
            .unwrap()
            .s[0];
        // SpecDef multiplied the top singular values by alpha.
        assert!(
            (stored / (ALPHA * undefended) - 1.0).abs() < 1e-9,
            "layer {i}"
        );
        let roles: Vec<FactorRole> = layer.factors.iter().map(|f| f.role).collect();
        assert_eq!(
            roles.len(),
            usize::from(p) + 1,
            "p factors, then C: {}",
            layer.form()
        );
        assert_eq!(roles[usize::from(p)], FactorRole::Compensation);
        for factor in &layer.factors[..usize::from(p)] {
            let top = faer_svd(&factor.matrix).unwrap().s[0];
            let expected = stored.powf(1.0 / f64::from(p));
            assert!(
                (top / expected - 1.0).abs() < 1e-9,
                "layer {i} {}: sigma_1 {top} against sigma_1(W~)^(1/p) = {expected}",
                factor.role.name()
            );
        }
    }
}

#[test]
fn each_attack_trains_the_groups_it_should() {
    let full = Trainable::default();
    let only = |attack: &str| AdaptiveAttack::trainable(attack.parse().unwrap(), full);
    assert_eq!(only("fusion"), full);
    assert_eq!(only("factorisation:3"), full);
    assert_eq!(
        only("injection"),
        Trainable::only(&[ParamGroup::Injected, ParamGroup::Biases])
    );
    assert_eq!(only("lora-both"), Trainable::only(&[ParamGroup::Lora]));
    // glm-locking's forms train the scenario's groups; the rewrite locks W~ and C (below).
    assert_eq!(only("factorisation-locked"), full);
    let frozen_weights = Trainable {
        weights: false,
        injected: false,
        ..full
    };
    assert_eq!(
        AdaptiveAttack::trainable("injection-unlocked".parse().unwrap(), frozen_weights),
        Trainable {
            injected: true,
            ..frozen_weights
        }
    );
}

/// One SGD step of a rewritten model (f64) under the attack's groups: (key, moved) for every
/// parameter of the rewritten model.
fn moved_by_one_step(attack: &str, model: &HostModel) -> Vec<(ParamKey, bool)> {
    let attack: AdaptiveAttack = attack.parse().unwrap();
    let rewritten = attack.apply(model, ALPHA, 0).unwrap();
    let mut e = CpuEngine64::new();
    let device = DeviceModel::upload(&mut e, &rewritten).unwrap();
    let ws = Workspace::alloc(&mut e, &device, 32, 1).unwrap();
    e.upload(ws.inputs, &inputs()).unwrap();
    let labels: Vec<f64> = (0..32).map(|i| (i % 10) as f64).collect();
    e.upload(ws.targets, &labels).unwrap();
    let grads = Gradients::alloc(&mut e, &device).unwrap();
    let trainable = attack.trainable(Trainable::default());
    let pairs = grads.trainable_pairs(&device, trainable);
    let sgd = OptimizerState::new(&mut e, OptimizerKind::Sgd, pairs).unwrap();
    let mut rec = Recording::new();
    graph::forward(&mut rec, &device, &ws).unwrap();
    graph::cross_entropy(&mut rec, &ws).unwrap();
    graph::backward(&mut rec, &device, &ws, &grads, trainable).unwrap();
    sgd.record_step(&mut rec, 1e-3, 1).unwrap();
    e.run(&rec).unwrap();
    let after = device.download(&mut e).unwrap();
    (rewritten.parameters().into_iter().zip(after.parameters()))
        .map(|((key, before), (_, now))| (key, before.values != now.values))
        .collect()
}

#[test]
fn glm_lockings_forms_keep_the_locked_factors_and_train_the_rest() {
    // Layer 1 undefended: glm-locking's injection trains its weight, the suite's does not.
    let (_, model) = defended(LayerSelection::Indices(vec![0, 2]));
    let factor = |layer, role| ParamKey {
        layer,
        role: ParamRole::Factor(role),
    };
    let unlocked = moved_by_one_step("injection-unlocked", &model);
    let suite = moved_by_one_step("injection", &model);
    for (key, moved) in &unlocked {
        let locked = key.layer != 1
            && matches!(
                key.role,
                ParamRole::Factor(FactorRole::Weight | FactorRole::Compensation)
            );
        assert_eq!(*moved, !locked, "injection-unlocked: {key}");
    }
    let moved = |steps: &[(ParamKey, bool)], key| steps.iter().any(|&(k, m)| k == key && m);
    assert!(!moved(&suite, factor(1, FactorRole::Weight)));
    assert!(moved(&suite, factor(0, FactorRole::Injected)));

    // glm-locking's factorisation: C locked, the factors and everything else train.
    let locked = moved_by_one_step("factorisation-locked:2", &model);
    for (key, moved) in &locked {
        let is_compensation = key.role == ParamRole::Factor(FactorRole::Compensation);
        assert_eq!(*moved, !is_compensation, "factorisation-locked: {key}");
    }
    assert!(
        locked
            .iter()
            .any(|(k, _)| k.role == ParamRole::Factor(FactorRole::Compensation))
    );
    // The suite's first form trains C.
    let trained = moved_by_one_step("factorisation:2", &model);
    assert!(moved(&trained, factor(0, FactorRole::Compensation)));
}

#[test]
fn lora_needs_compensation_layers_except_on_the_weights() {
    let base = HostModel::init(&spec(), 3);
    let on_weights: AdaptiveAttack = "lora-weight:4".parse().unwrap();
    let with_lora = on_weights.apply(&base, 1.0, 1).unwrap();
    let added = with_lora.parameter_count() - base.parameter_count();
    let expected: usize = (0..3)
        .map(|i| {
            let (n, m) = spec().layer_shape(i);
            4 * (n + m)
        })
        .sum();
    assert_eq!(added, expected, "rank-4 A and B on every layer");
    for name in ["lora-compensation", "injection", "factorisation", "fusion"] {
        let err = name
            .parse::<AdaptiveAttack>()
            .unwrap()
            .apply(&base, 1.0, 1)
            .unwrap_err();
        assert!(err.contains("compensated layers"), "{name}: {err}");
    }
}

#[test]
fn attack_names_parse_and_bad_ones_are_refused_naming_them() {
    assert_eq!(
        "lora-both:4".parse(),
        Ok(AdaptiveAttack::Lora {
            placement: LoraPlacement::Both,
            rank: 4
        })
    );
    for attack in every_attack() {
        assert_eq!(
            attack.to_string().parse(),
            Ok(attack),
            "{attack} round-trips"
        );
    }
    let auto = |name: &str| name.parse::<AdaptiveAttack>().unwrap();
    assert_eq!(auto("factorisation").describe(1e6), "factorisation p=6");
    assert_eq!(
        auto("factorisation-locked").describe(1e4),
        "factorisation-locked p=4"
    );
    assert_eq!(auto("factorisation-fused").factor_count(1e2), 2);
    assert_eq!(
        auto("injection-unlocked").describe(1e4),
        "injection-unlocked"
    );
    for (bad, says) in [
        ("fusion:2", "takes no"),
        ("injection-unlocked:2", "takes no"),
        ("factorisation-locked:1", "factor count"),
        ("lora-sideways", "unknown adaptive attack"),
        ("factorisation:0", "factor count"),
        ("lora-weight:x", "LoRA rank"),
    ] {
        let err = bad.parse::<AdaptiveAttack>().unwrap_err();
        assert!(err.contains(says) && err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn the_builtin_scenario_runs_every_adaptive_attack_and_quick_none() {
    // The default at alpha 1e4; the whole study at every alpha.
    let main = Scenario::builtin(None).unwrap();
    let labels: Vec<String> = main.targets().iter().map(|t| t.label()).collect();
    let full = Scenario::builtin(Some("full")).unwrap();
    let whole: Vec<String> = full.targets().iter().map(|t| t.label()).collect();
    for (labels, expected) in [
        (&labels, "none + lora-weight r=8"),
        (&labels, "specdef a=1e4 + fusion"),
        (&labels, "specdef a=1e4 + injection-unlocked"),
        (&labels, "specdef a=1e4 + factorisation p=4"),
        (&labels, "specdef a=1e4 + factorisation-locked p=4"),
        (&labels, "specdef a=1e4 + factorisation-fused p=4"),
        (&labels, "specdef a=1e4 + lora-fused r=8"),
        (&whole, "specdef a=1e2 + factorisation p=2"),
        (&whole, "specdef a=1e6 + factorisation p=6"),
        (&whole, "specdef a=1e6 + lora-fused r=8"),
    ] {
        assert!(
            labels.iter().any(|l| l == expected),
            "{expected} missing from {labels:?}"
        );
    }
    let quick = Scenario::builtin(Some("quick")).unwrap();
    assert!(quick.targets().iter().all(|t| t.adaptive.is_none()));
}

#[test]
fn an_adaptive_attack_that_cannot_act_is_refused_before_any_work() {
    let text = specdef::scenario::DEFAULT_SCENARIO.replace(
        "layers = \"all\"\n",
        "layers = \"all\"\ncompensate = false\n",
    );
    let err = Scenario::parse(&text, None, "ablation.toml").unwrap_err();
    assert!(
        err.contains("ablation.toml") && err.contains("injection-unlocked"),
        "{err}"
    );
    let bad = specdef::scenario::DEFAULT_SCENARIO.replace("\"fusion\", ", "\"fission\", ");
    let err = Scenario::parse(&bad, None, "typo.toml").unwrap_err();
    assert!(err.contains("fission"), "{err}");
}

#[test]
fn bad_adaptive_alphas_and_an_empty_optimiser_list_are_refused_naming_the_field() {
    let builtin = Scenario::builtin(None).unwrap();
    for alpha in [0.0, -1e4, f64::NAN, f64::INFINITY] {
        let mut scenario = builtin.clone();
        scenario.adaptive.alphas = Some(vec![1e4, alpha]);
        let err = scenario.validate().unwrap_err();
        assert!(err.contains("adaptive.alphas"), "{alpha}: {err}");
    }
    let mut scenario = builtin.clone();
    scenario.adaptive.optimizers.clear();
    let err = scenario.validate().unwrap_err();
    assert!(err.contains("adaptive.optimizers"), "{err}");
}

#[test]
fn a_scenario_records_each_rewrite_with_its_overhead() {
    let mut scenario = common::short_quick();
    scenario.adaptive.attacks = ["fusion", "injection", "factorisation:2", "lora-weight:2"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    scenario.adaptive.optimizers = vec![specdef::training::OptimizerKind::Adam];
    let outcome = run_quietly(&mut CpuEngine32::new(), &scenario, None);
    let widths = &scenario.model.widths;
    let undefended: usize = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let defended = outcome
        .records
        .iter()
        .find(|r| r.alpha.is_some() && r.adaptive.is_none())
        .map(|r| r.parameter_count)
        .unwrap();
    let expect = [
        ("none + lora-weight r=2", None),
        (
            "specdef a=1e4 + fusion",
            Some(undefended as i64 - defended as i64),
        ),
        (
            "specdef a=1e4 + injection",
            Some(64 * 64 + 64 * 64 + 10 * 10),
        ),
        (
            "specdef a=1e4 + factorisation p=2",
            Some(64 * 64 * 2 + 10 * 10),
        ),
        (
            "specdef a=1e4 + lora-weight r=2",
            Some(2 * (64 + 64) * 2 + 2 * (64 + 10)),
        ),
    ];
    for (label, overhead) in expect {
        let runs: Vec<_> = outcome
            .records
            .iter()
            .filter(|r| r.defense_label() == label)
            .collect();
        assert_eq!(runs.len(), 2, "{label}: Adam at 2 learning rates");
        if let Some(overhead) = overhead {
            assert_eq!(runs[0].adaptive_overhead, Some(overhead), "{label}");
        }
        assert_eq!(runs[0].optimizer, "adam");
        let summary = outcome.defenses.iter().find(|d| d.label == label).unwrap();
        // The rewrite keeps the defended model's function, so its utility (f32 engine) too.
        let plain = outcome
            .defenses
            .iter()
            .find(|d| d.label == "specdef a=1e4")
            .unwrap();
        if label.starts_with("specdef") {
            assert!(
                (summary.utility_after_defense - plain.utility_after_defense).abs() <= 0.02,
                "{label}: utility {} against the defended model's {}",
                summary.utility_after_defense,
                plain.utility_after_defense
            );
        }
    }
    let injected = outcome
        .records
        .iter()
        .find(|r| r.defense_label() == "specdef a=1e4 + injection")
        .unwrap();
    assert_eq!(injected.trainable, "biases,injected");
    let tables = specdef::run_folder::tables(&outcome.records, &outcome.defenses);
    assert!(tables.contains("adaptive attacks"), "{tables}");
    assert!(
        tables.contains("specdef a=1e4 + factorisation p=2"),
        "{tables}"
    );
}
