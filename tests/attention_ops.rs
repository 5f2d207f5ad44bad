//! The ops a transformer adds: rows gathered by index and summed back (an embedding and its
//! gradient), batched products over strided views (attention's heads, mean pooling) and the
//! masked softmax. Each on every engine (CPU f32, the GPU where an adapter exists) against the
//! f64 engine; their adjoint and tangent rules against central differences in f64, through a
//! small attention layer built from all of them.

mod common;

use common::{check_on_every_engine, relative_error, rng, uniform};
use specdef::Tolerance;
use specdef::engine::cpu::CpuEngine64;
use specdef::engine::{
    BatchShape, BatchedLayout, BatchedMatmul, Engine, Recording, ReduceAxis, Reduction, Tensor,
    gradient_recording, tangent_recording,
};
use specdef::tolerance::rms;

const VOCAB: usize = 11;
const WIDTH: usize = 6;

/// Indices with repeats (3 three times, 0 twice) and one row of the table never named.
const IDS: [f64; 9] = [3.0, 0.0, 7.0, 3.0, 10.0, 0.0, 3.0, 5.0, 1.0];

#[test]
fn gathered_rows_and_their_sum_back_match_on_every_engine() {
    let table = uniform(&mut rng(1), VOCAB * WIDTH, 1.0);
    let rows = uniform(&mut rng(2), IDS.len() * WIDTH, 1.0);
    let body = |e: &mut dyn Engine| {
        let t = e.tensor_from("table", VOCAB, WIDTH, &table).unwrap();
        let ids = e.tensor_from("ids", IDS.len(), 1, &IDS).unwrap();
        let r = e.tensor_from("rows", IDS.len(), WIDTH, &rows).unwrap();
        let gathered = e.alloc("gathered", IDS.len(), WIDTH).unwrap();
        let mut rec = Recording::new();
        rec.gather_rows(t, ids, gathered).unwrap();
        rec.scatter_add_rows(r, ids, t).unwrap();
        e.run(&rec).unwrap();
        let mut out = e.read_one(gathered).unwrap();
        out.extend(e.read_one(t).unwrap());
        out
    };
    let exact = body(&mut CpuEngine64::new());
    // Against the definition: row 4 of the output is table row 10; table row 3 gained rows
    // 0, 3 and 6; row 2 of the table (never named) is unchanged.
    assert_eq!(exact[4 * WIDTH..5 * WIDTH], table[10 * WIDTH..11 * WIDTH]);
    let offset = IDS.len() * WIDTH;
    for c in 0..WIDTH {
        let want = table[3 * WIDTH + c] + rows[c] + rows[3 * WIDTH + c] + rows[6 * WIDTH + c];
        assert!((exact[offset + 3 * WIDTH + c] - want).abs() < 1e-15);
        assert_eq!(exact[offset + 2 * WIDTH + c], table[2 * WIDTH + c]);
    }
    // Copies round once; each table row adds at most three rows in the same order everywhere.
    check_on_every_engine(
        "gather and scatter-add",
        Tolerance::f32_elementwise(4),
        body,
    );
}

#[test]
fn an_index_outside_the_table_gives_a_nan_row_and_is_skipped_by_the_scatter() {
    let ids = [2.0, -1.0, 11.0, 1.5];
    let table = uniform(&mut rng(3), VOCAB * WIDTH, 1.0);
    let body = |e: &mut dyn Engine| {
        let t = e.tensor_from("table", VOCAB, WIDTH, &table).unwrap();
        let i = e.tensor_from("ids", ids.len(), 1, &ids).unwrap();
        let ones = e
            .tensor_from("ones", ids.len(), WIDTH, &[1.0; 4 * WIDTH])
            .unwrap();
        let gathered = e.alloc("gathered", ids.len(), WIDTH).unwrap();
        let mut rec = Recording::new();
        rec.gather_rows(t, i, gathered).unwrap();
        rec.scatter_add_rows(ones, i, t).unwrap();
        e.run(&rec).unwrap();
        let mut out = e.read_one(gathered).unwrap();
        out.extend(e.read_one(t).unwrap());
        out
    };
    let exact = body(&mut CpuEngine64::new());
    assert!(exact[..WIDTH].iter().all(|v| v.is_finite()));
    assert!(exact[WIDTH..4 * WIDTH].iter().all(|v| v.is_nan()));
    let table_after = &exact[4 * WIDTH..];
    let changed: Vec<usize> = (0..VOCAB)
        .filter(|&r| table_after[r * WIDTH] != table[r * WIDTH])
        .collect();
    assert_eq!(changed, vec![2], "only the valid index's row gains");
    check_on_every_engine("bad indices", Tolerance::f32_elementwise(2), body);
}

/// Sequences, heads, tokens and the width of a head of the attention-shaped cases.
const SEQUENCES: usize = 2;
const HEADS: usize = 3;
const TOKENS: usize = 5;
const HEAD_WIDTH: usize = 4;
const HIDDEN: usize = HEADS * HEAD_WIDTH;

/// Head `h` of sequence `s` of a `(sequences tokens) x hidden` activation.
fn heads() -> BatchedLayout {
    BatchedLayout {
        outer: TOKENS * HIDDEN,
        inner: HEAD_WIDTH,
        leading: HIDDEN,
    }
}

/// The `tokens x tokens` scores of (sequence, head), stored one after another.
fn scores_layout() -> BatchedLayout {
    BatchedLayout {
        outer: HEADS * TOKENS * TOKENS,
        inner: TOKENS * TOKENS,
        leading: TOKENS,
    }
}

fn per_head(m: usize, n: usize, k: usize) -> BatchShape {
    BatchShape {
        outer: SEQUENCES,
        inner: HEADS,
        m,
        n,
        k,
    }
}

/// `scores = alpha Q_h K_h^T` then `context = P_h V_h` (P the scores), per sequence and head.
fn attention_products(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scores: Tensor,
    context: Tensor,
) -> [BatchedMatmul; 2] {
    [
        BatchedMatmul {
            a: q,
            b: k,
            c: scores,
            shape: per_head(TOKENS, TOKENS, HEAD_WIDTH),
            a_layout: heads(),
            b_layout: heads(),
            c_layout: scores_layout(),
            trans_a: false,
            trans_b: true,
            alpha: 0.5,
            beta: 0.0,
        },
        BatchedMatmul {
            a: scores,
            b: v,
            c: context,
            shape: per_head(TOKENS, HEAD_WIDTH, TOKENS),
            a_layout: scores_layout(),
            b_layout: heads(),
            c_layout: heads(),
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        },
    ]
}

/// Scores and context, written out in f64 from the definition.
fn attention_products_by_definition(q: &[f64], k: &[f64], v: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let at = |x: &[f64], s: usize, t: usize, h: usize, j: usize| {
        x[(s * TOKENS + t) * HIDDEN + h * HEAD_WIDTH + j]
    };
    let mut scores = vec![0.0; SEQUENCES * HEADS * TOKENS * TOKENS];
    let mut context = vec![0.0; SEQUENCES * TOKENS * HIDDEN];
    for s in 0..SEQUENCES {
        for h in 0..HEADS {
            for i in 0..TOKENS {
                for j in 0..TOKENS {
                    let dot: f64 = (0..HEAD_WIDTH)
                        .map(|d| at(q, s, i, h, d) * at(k, s, j, h, d))
                        .sum();
                    scores[((s * HEADS + h) * TOKENS + i) * TOKENS + j] = 0.5 * dot;
                }
                for d in 0..HEAD_WIDTH {
                    context[(s * TOKENS + i) * HIDDEN + h * HEAD_WIDTH + d] = (0..TOKENS)
                        .map(|j| {
                            scores[((s * HEADS + h) * TOKENS + i) * TOKENS + j] * at(v, s, j, h, d)
                        })
                        .sum();
                }
            }
        }
    }
    (scores, context)
}

#[test]
fn per_head_products_match_their_definition_on_every_engine() {
    let len = SEQUENCES * TOKENS * HIDDEN;
    let [q, k, v] = [11, 12, 13].map(|seed| uniform(&mut rng(seed), len, 1.0));
    let body = |e: &mut dyn Engine| {
        let [qt, kt, vt] =
            [&q, &k, &v].map(|x| e.tensor_from("x", SEQUENCES * TOKENS, HIDDEN, x).unwrap());
        let scores = e
            .alloc("scores", SEQUENCES * HEADS * TOKENS, TOKENS)
            .unwrap();
        let context = e.alloc("context", SEQUENCES * TOKENS, HIDDEN).unwrap();
        let mut rec = Recording::new();
        for product in attention_products(qt, kt, vt, scores, context) {
            rec.batched_matmul(product).unwrap();
        }
        e.run(&rec).unwrap();
        let mut out = e.read_one(scores).unwrap();
        out.extend(e.read_one(context).unwrap());
        out
    };
    let (scores, context) = attention_products_by_definition(&q, &k, &v);
    let want: Vec<f64> = scores.into_iter().chain(context).collect();
    Tolerance::new(1e-14, 1e-12)
        .check(&body(&mut CpuEngine64::new()), &want)
        .unwrap();
    check_on_every_engine(
        "per-head products",
        Tolerance::f32_sum(2 * TOKENS, rms(&want)),
        body,
    );
}

#[test]
fn batched_products_of_awkward_shapes_and_every_transposition() {
    // 3 x 2 batches of 17 x 33 over 9, and of 1 x 70 over 65 (pooling's shape), each operand's
    // matrices packed one after another; with beta = 0.5 accumulating into a seeded c.
    for (m, n, k) in [(17, 33, 9), (1, 70, 65), (20, 1, 3)] {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let shape = BatchShape {
                outer: 3,
                inner: 2,
                m,
                n,
                k,
            };
            let packed = |rows: usize, cols: usize| BatchedLayout {
                outer: 2 * rows * cols,
                inner: rows * cols,
                leading: cols,
            };
            let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
            let (br, bc) = if trans_b { (n, k) } else { (k, n) };
            let a = uniform(&mut rng(21), 6 * ar * ac, 1.0);
            let b = uniform(&mut rng(22), 6 * br * bc, 1.0);
            let c = uniform(&mut rng(23), 6 * m * n, 1.0);
            let body = |e: &mut dyn Engine| {
                let at = e.tensor_from("a", 6 * ar, ac, &a).unwrap();
                let bt = e.tensor_from("b", 6 * br, bc, &b).unwrap();
                let ct = e.tensor_from("c", 6 * m, n, &c).unwrap();
                let mut rec = Recording::new();
                rec.batched_matmul(BatchedMatmul {
                    a: at,
                    b: bt,
                    c: ct,
                    shape,
                    a_layout: packed(ar, ac),
                    b_layout: packed(br, bc),
                    c_layout: packed(m, n),
                    trans_a,
                    trans_b,
                    alpha: 1.5,
                    beta: 0.5,
                })
                .unwrap();
                e.run(&rec).unwrap();
                e.read_one(ct).unwrap()
            };
            let what = format!("batched {m}x{n}x{k} trans_a={trans_a} trans_b={trans_b}");
            check_on_every_engine(&what, Tolerance::f32_sum(k + 1, (k as f64).sqrt()), body);
        }
    }
}

#[test]
fn batched_products_refuse_views_outside_their_tensor_or_overlapping_outputs() {
    let mut e = CpuEngine64::new();
    let x = e.alloc("x", SEQUENCES * TOKENS, HIDDEN).unwrap();
    let scores = e
        .alloc("scores", SEQUENCES * HEADS * TOKENS, TOKENS)
        .unwrap();
    let context = e.alloc("context", SEQUENCES * TOKENS, HIDDEN).unwrap();
    let [product, _] = attention_products(x, x, x, scores, context);
    let mut rec = Recording::new();
    let far = BatchedMatmul {
        a_layout: BatchedLayout {
            outer: TOKENS * HIDDEN + 1,
            ..heads()
        },
        ..product
    };
    let message = rec.batched_matmul(far).err().unwrap().to_string();
    assert!(
        message.contains("a's 2x3 batch of 5x4 matrices reaches element"),
        "{message}"
    );
    let overlapping = BatchedMatmul {
        c_layout: BatchedLayout {
            inner: 1,
            ..scores_layout()
        },
        ..product
    };
    let message = rec.batched_matmul(overlapping).err().unwrap().to_string();
    assert!(message.contains("c's matrices overlap"), "{message}");
    let aliased = BatchedMatmul {
        c: x,
        c_layout: heads(),
        shape: per_head(TOKENS, HEAD_WIDTH, HEAD_WIDTH),
        ..product
    };
    assert!(rec.batched_matmul(aliased).is_err());
}

/// A key mask per sequence: the first keeps 3 of 5 tokens, the second all 5.
fn key_mask() -> Vec<f64> {
    let mut mask = vec![1.0; SEQUENCES * TOKENS];
    mask[3] = 0.0;
    mask[4] = 0.0;
    mask
}

#[test]
fn masked_softmax_matches_its_definition_on_every_engine() {
    let rows = SEQUENCES * HEADS * TOKENS;
    let x = uniform(&mut rng(31), rows * TOKENS, 4.0);
    // A third mask row that keeps nothing: its rows are all zero.
    let mut mask = key_mask();
    mask.extend([0.0; TOKENS]);
    let groups = 3;
    let rows_per_mask_row = rows / groups;
    let body = |e: &mut dyn Engine| {
        let xt = e.tensor_from("x", rows, TOKENS, &x).unwrap();
        let mt = e.tensor_from("mask", groups, TOKENS, &mask).unwrap();
        let out = e.alloc("p", rows, TOKENS).unwrap();
        let mut rec = Recording::new();
        rec.masked_softmax(xt, mt, out, rows_per_mask_row).unwrap();
        e.run(&rec).unwrap();
        e.read_one(out).unwrap()
    };
    let want: Vec<f64> = x
        .chunks(TOKENS)
        .enumerate()
        .flat_map(|(r, row)| {
            let keep = &mask[(r / rows_per_mask_row) * TOKENS..][..TOKENS];
            let total: f64 = row
                .iter()
                .zip(keep)
                .map(|(v, k)| if *k != 0.0 { v.exp() } else { 0.0 })
                .sum();
            let keep = keep.to_vec();
            row.iter()
                .zip(keep)
                .map(move |(v, k)| if k != 0.0 { v.exp() / total } else { 0.0 })
                .collect::<Vec<_>>()
        })
        .collect();
    Tolerance::new(1e-15, 1e-13)
        .check(&body(&mut CpuEngine64::new()), &want)
        .unwrap();
    assert!(want[want.len() - TOKENS..].iter().all(|&p| p == 0.0));
    check_on_every_engine(
        "masked softmax",
        Tolerance::f32_transcendental(1.0).plus(Tolerance::f32_sum(TOKENS, 1.0)),
        body,
    );
    let mut e = CpuEngine64::new();
    let (xt, mt, out) = (
        e.alloc("x", rows, TOKENS).unwrap(),
        e.alloc("mask", 4, TOKENS).unwrap(),
        e.alloc("p", rows, TOKENS).unwrap(),
    );
    let message = Recording::new()
        .masked_softmax(xt, mt, out, 10)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("does not fit"), "{message}");
}

/// Token ids of the two sequences (the padding of the first is token 0).
const TOKEN_IDS: [f64; SEQUENCES * TOKENS] = [4.0, 9.0, 4.0, 0.0, 0.0, 1.0, 2.0, 9.0, 4.0, 7.0];

/// A small attention layer from every new op, to a scalar: embeddings gathered by id, one head
/// split used as query, key and value through three maps, masked softmax, per-head context,
/// masked mean pooling (a batched product with the mask's weights), `sum((pooled w)^2)`.
/// Returns the loss and the parameters (embedding table, three maps).
fn attention_loss(
    e: &mut dyn Engine,
    rec: &mut Recording,
    params: &[Vec<f64>; 4],
) -> (Tensor, [Tensor; 4]) {
    let vocab = 10;
    let table = e.tensor_from("table", vocab, HIDDEN, &params[0]).unwrap();
    let maps = [1, 2, 3].map(|i| e.tensor_from("map", HIDDEN, HIDDEN, &params[i]).unwrap());
    let ids = e
        .tensor_from("ids", SEQUENCES * TOKENS, 1, &TOKEN_IDS)
        .unwrap();
    let mask = e
        .tensor_from("mask", SEQUENCES, TOKENS, &key_mask())
        .unwrap();
    // Pooling weights: the mask over its count.
    let weights: Vec<f64> = key_mask()
        .chunks(TOKENS)
        .flat_map(|row| {
            let count: f64 = row.iter().sum();
            row.iter().map(move |k| k / count).collect::<Vec<_>>()
        })
        .collect();
    let pool_weights = e.tensor_from("pool", SEQUENCES, TOKENS, &weights).unwrap();
    let rows = SEQUENCES * TOKENS;
    let x = e.alloc("x", rows, HIDDEN).unwrap();
    rec.gather_rows(table, ids, x).unwrap();
    let [q, k, v] = maps.map(|map| {
        let out = e.alloc("qkv", rows, HIDDEN).unwrap();
        rec.matmul(x, map, out, false, true).unwrap();
        out
    });
    let scores = e
        .alloc("scores", SEQUENCES * HEADS * TOKENS, TOKENS)
        .unwrap();
    let probabilities = e.alloc("p", SEQUENCES * HEADS * TOKENS, TOKENS).unwrap();
    let context = e.alloc("context", rows, HIDDEN).unwrap();
    let [score_product, context_product] = attention_products(q, k, v, scores, context);
    rec.batched_matmul(score_product).unwrap();
    rec.masked_softmax(scores, mask, probabilities, HEADS * TOKENS)
        .unwrap();
    rec.batched_matmul(BatchedMatmul {
        a: probabilities,
        ..context_product
    })
    .unwrap();
    let pooled = e.alloc("pooled", SEQUENCES, HIDDEN).unwrap();
    rec.batched_matmul(BatchedMatmul {
        a: pool_weights,
        b: context,
        c: pooled,
        shape: BatchShape {
            outer: SEQUENCES,
            inner: 1,
            m: 1,
            n: HIDDEN,
            k: TOKENS,
        },
        a_layout: BatchedLayout {
            outer: TOKENS,
            inner: 0,
            leading: TOKENS,
        },
        b_layout: BatchedLayout {
            outer: TOKENS * HIDDEN,
            inner: 0,
            leading: HIDDEN,
        },
        c_layout: BatchedLayout {
            outer: HIDDEN,
            inner: 0,
            leading: HIDDEN,
        },
        trans_a: false,
        trans_b: false,
        alpha: 1.0,
        beta: 0.0,
    })
    .unwrap();
    let w = e
        .tensor_from(
            "w",
            SEQUENCES,
            HIDDEN,
            &uniform(&mut rng(41), SEQUENCES * HIDDEN, 1.0),
        )
        .unwrap();
    let weighted = e.alloc("weighted", SEQUENCES, HIDDEN).unwrap();
    let total = e.alloc("total", 1, 1).unwrap();
    rec.binary(specdef::engine::BinaryOp::Mul, pooled, w, weighted)
        .unwrap();
    rec.reduce(Reduction::SumOfSquares, ReduceAxis::Whole, weighted, total)
        .unwrap();
    (total, [table, maps[0], maps[1], maps[2]])
}

fn attention_params() -> [Vec<f64>; 4] {
    [
        uniform(&mut rng(51), 10 * HIDDEN, 1.0),
        uniform(&mut rng(52), HIDDEN * HIDDEN, 0.5),
        uniform(&mut rng(53), HIDDEN * HIDDEN, 0.5),
        uniform(&mut rng(54), HIDDEN * HIDDEN, 0.5),
    ]
}

/// The loss and its reverse-mode gradient at `params`, in f64.
fn loss_and_gradient(params: &[Vec<f64>; 4]) -> (f64, Vec<Vec<f64>>) {
    let mut e = CpuEngine64::new();
    let mut rec = Recording::new();
    let (total, tensors) = attention_loss(&mut e, &mut rec, params);
    let reverse = gradient_recording(&mut e, &rec, total, 1.0).unwrap();
    e.run(&reverse.recording).unwrap();
    let gradient = tensors
        .iter()
        .map(|&t| e.read_one(reverse.gradient_of(t).unwrap()).unwrap())
        .collect();
    (e.read_one(total).unwrap()[0], gradient)
}

#[test]
fn attention_gradient_and_hessian_vector_product_match_central_differences() {
    let params = attention_params();
    let (_, gradient) = loss_and_gradient(&params);
    let h = 1e-6;
    for (part, name) in ["embedding table", "query map", "key map", "value map"]
        .into_iter()
        .enumerate()
    {
        let numeric: Vec<f64> = (0..params[part].len())
            .map(|i| {
                let at = |delta: f64| {
                    let mut p = params.clone();
                    p[part][i] += delta;
                    loss_and_gradient(&p).0
                };
                (at(h) - at(-h)) / (2.0 * h)
            })
            .collect();
        let error = relative_error(&gradient[part], &numeric);
        assert!(
            error < 1e-7,
            "gradient of the {name}: relative error {error:e}"
        );
    }
    // Rows 3, 5, 6 and 8 of the table are never gathered: no gradient reaches them.
    for row in [3, 5, 6, 8] {
        assert!(
            gradient[0][row * HIDDEN..][..HIDDEN]
                .iter()
                .all(|&g| g == 0.0)
        );
    }

    // H v (forward over reverse) against central differences of the gradient along v.
    let direction: [Vec<f64>; 4] =
        std::array::from_fn(|i| uniform(&mut rng(60 + i as u64), params[i].len(), 1.0));
    let mut e = CpuEngine64::new();
    let mut rec = Recording::new();
    let (total, tensors) = attention_loss(&mut e, &mut rec, &params);
    let reverse = gradient_recording(&mut e, &rec, total, 1.0).unwrap();
    let seeds: Vec<(Tensor, Tensor)> = tensors
        .iter()
        .zip(&direction)
        .map(|(&t, v)| (t, e.tensor_from("v", t.rows(), t.cols(), v).unwrap()))
        .collect();
    let tangents = tangent_recording(&mut e, &reverse.recording, &seeds).unwrap();
    e.run(&tangents.recording).unwrap();
    let moved = |delta: f64| -> [Vec<f64>; 4] {
        std::array::from_fn(|i| {
            params[i]
                .iter()
                .zip(&direction[i])
                .map(|(p, d)| p + delta * d)
                .collect()
        })
    };
    let step = 1e-5;
    let (up, down) = (
        loss_and_gradient(&moved(step)).1,
        loss_and_gradient(&moved(-step)).1,
    );
    for (part, &t) in tensors.iter().enumerate() {
        let hv = e
            .read_one(
                tangents
                    .tangent_of(reverse.gradient_of(t).unwrap())
                    .unwrap(),
            )
            .unwrap();
        let want: Vec<f64> = up[part]
            .iter()
            .zip(&down[part])
            .map(|(u, d)| (u - d) / (2.0 * step))
            .collect();
        let error = relative_error(&hv, &want);
        assert!(error < 1e-7, "H v of part {part}: relative error {error:e}");
    }
}
